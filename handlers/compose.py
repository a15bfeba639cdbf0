"""Builds the bytes of a mail the gateway sends (SPEC section 4): one recipient, no Cc."""

from __future__ import annotations

import email.policy
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

POLICY = email.policy.SMTP.clone(max_line_length=78)
MAX_REFERENCES = 20  # enough to thread; a References field must not grow without bound


@dataclass(frozen=True)
class Envelope:
    """The header fields of one outgoing mail."""

    from_name: str
    from_address: str
    to: str
    subject: str
    message_id: str
    date: datetime
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    auto_submitted: str = "auto-generated"


def _clean(text: str) -> str:
    """One line of header text: control characters (CR, LF) can never start a new field."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _address(name: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=_clean(name), username=local, domain=domain)


def _headers(message: EmailMessage, envelope: Envelope) -> None:
    message["From"] = _address(envelope.from_name, envelope.from_address)
    message["To"] = _address("", envelope.to)
    if envelope.reply_to:
        message["Reply-To"] = _address("", envelope.reply_to)
    message["Subject"] = _clean(envelope.subject)
    message["Date"] = format_datetime(envelope.date)
    message["Message-ID"] = f"<{envelope.message_id}>"
    if envelope.in_reply_to:
        message["In-Reply-To"] = f"<{envelope.in_reply_to}>"
    references = list(dict.fromkeys(envelope.references))[-MAX_REFERENCES:]
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references)
    # RFC 3834: mark it automatic so that well-behaved responders stay quiet.
    message["Auto-Submitted"] = envelope.auto_submitted
    message["X-Auto-Response-Suppress"] = "All"


def _text_part(body: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    part.set_content(body, charset="utf-8", cte="quoted-printable")
    return part


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def compose(envelope: Envelope, body: str, original: bytes | None = None) -> bytes:
    """The text, and the original attached unchanged as message/rfc822 when given."""
    if original is None:
        message = EmailMessage(policy=POLICY)
        _headers(message, envelope)
        message.set_content(body, charset="utf-8", cte="quoted-printable")
        return message.as_bytes(policy=POLICY)
    # The original goes in byte for byte: re-generating it through a parser would
    # change what staff see (and break its DKIM signature for anyone verifying it).
    attached = _crlf(original)
    if not attached.endswith(b"\r\n"):
        attached += b"\r\n"
    part = _text_part(body)
    del part["MIME-Version"]
    text = part.as_bytes(policy=POLICY)
    boundary = "=_" + secrets.token_hex(16)
    while boundary.encode() in attached or boundary.encode() in text:
        boundary = "=_" + secrets.token_hex(16)
    head = EmailMessage(policy=POLICY)
    _headers(head, envelope)
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    encoding = b"7bit" if attached.isascii() else b"8bit"
    marker = f"--{boundary}".encode()
    header_block = b"".join(POLICY.fold_binary(k, v) for k, v in head.items())
    return b"".join(
        (
            header_block,
            b"\r\n",
            marker,
            b"\r\n",
            text,
            b"\r\n",
            marker,
            b"\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: ",
            encoding,
            b'\r\nContent-Disposition: attachment; filename="original.eml"\r\n\r\n',
            attached,
            marker,
            b"--\r\n",
        )
    )
