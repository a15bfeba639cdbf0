"""The per-recipient fields of a delivery status notification (RFC 3464, RFC 6533)."""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import quopri

from handlers.message import DeliveryStatus

STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
MAX_FIELD = 300  # a remote server's diagnostic can be long; notices quote only this much


def _field(block: email.message.Message, name: str) -> str:
    value = " ".join(str(block.get(name) or "").split())
    return value[:MAX_FIELD]


def _encoded_text(part: email.message.Message) -> str | None:
    """The decoded fields of a base64 or quoted-printable status part (the parser splits
    the still-encoded text into blocks), or None when the part is not encoded."""
    encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if encoding not in ("base64", "quoted-printable"):
        return None
    payload = part.get_payload()
    blocks = payload if isinstance(payload, list) else []
    parsed = [b.as_string().strip("\n") for b in blocks if isinstance(b, email.message.Message)]
    body = "\n\n".join(parsed) or str(payload)
    try:
        if encoding == "base64":
            data = base64.b64decode("".join(body.split()))
        else:
            data = quopri.decodestring(body.encode("ascii", "replace"))
    except (ValueError, binascii.Error):
        return ""
    return data.decode("utf-8", "replace")


def _blocks(part: email.message.Message) -> list[email.message.Message]:
    """The field blocks of a delivery-status part: parsed as sub-messages, or from its text."""
    text = _encoded_text(part)
    payload = part.get_payload()
    if text is None and isinstance(payload, list):
        return [b for b in payload if isinstance(b, email.message.Message)]
    if text is None:
        text = str(payload)
    parser = email.parser.Parser()
    chunks = text.replace("\r\n", "\n").split("\n\n")
    return [parser.parsestr(chunk.strip("\n") + "\n\n", headersonly=True) for chunk in chunks]


def extract(raw: bytes) -> tuple[DeliveryStatus, ...]:
    """Each recipient block (the first block is the message's: it has no Action)."""
    root = email.parser.BytesParser().parsebytes(raw)
    if root.get_content_type() != "multipart/report":
        return ()
    found: list[DeliveryStatus] = []
    for part in root.walk():
        if part.get_content_type() not in STATUS_TYPES:
            continue
        for block in _blocks(part):
            action = _field(block, "Action").lower()
            if not action:
                continue
            recipient = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
            found.append(
                DeliveryStatus(
                    recipient=recipient.partition(";")[2].strip() or recipient,
                    action=action.split()[0],
                    status=_field(block, "Status"),
                    diagnostic=_field(block, "Diagnostic-Code"),
                )
            )
    return tuple(found)
