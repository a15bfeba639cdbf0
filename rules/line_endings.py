"""Line endings of received mail: every bare CR and bare LF becomes CRLF (SPEC section 4)."""

from __future__ import annotations


def normalise_line_endings(raw: bytes) -> bytes:
    """CRLF stays; a bare CR or bare LF becomes CRLF, as Postfix's
    `smtpd_forbid_bare_newline = normalize` does.

    A message's line ends must mean one thing to every hop after us: a bare LF that one
    MTA takes for a line end and another does not is what SMTP smuggling exploits.
    Three passes of `bytes.replace`, each linear: CRLF and bare CR collapse to LF, then
    every LF (now the only line end left) expands to CRLF.
    """
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
