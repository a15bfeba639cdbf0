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
    # Received mail is nearly always CRLF throughout already, and three counts (which copy
    # nothing) are cheaper than three copies. As many CRLFs as LFs means every LF ends a
    # CRLF; as many as CRs, every CR begins one: then there is nothing to change.
    if raw.count(b"\n") == raw.count(b"\r") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
