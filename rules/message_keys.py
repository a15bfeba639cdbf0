"""Idempotency keys for received mail: Message-ID plus SHA-256 of the body (SPEC section 2)."""

from __future__ import annotations

import hashlib
import re

# The header block ends at the first empty line; relays and mailbox providers add
# or rewrite header fields (Received, Return-Path, X-Original-To) but leave the body.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(
    rb"^message-id[ \t]*:[ \t]*((?:.|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE
)
_ID = re.compile(rb"<([^<>\s]{1,900})>")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body); a message without an empty line is all header."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    return raw[: match.start()], raw[match.end() :]


def message_id(raw: bytes) -> str | None:
    """The first Message-ID field's id without angle brackets, or None."""
    header, _ = split_message(raw)
    return _message_id(header)


def _message_id(header: bytes) -> str | None:
    field = _MESSAGE_ID.search(header)
    if field is None:
        return None
    inner = _ID.search(field.group(1))
    value = inner.group(1) if inner is not None else field.group(1).strip()
    text = value.decode("ascii", "replace").strip()
    return text[:900] or None


def dedup_key(raw: bytes) -> str:
    """`mid:` + SHA-256(Message-ID, body), else `raw:` + SHA-256 of the whole message."""
    return keys(raw)[0]


def keys(raw: bytes) -> tuple[str, str | None]:
    """(dedup key, Message-ID), reading the header block once."""
    header, body = split_message(raw)
    mid = _message_id(header)
    if mid is None:
        return "raw:" + hashlib.sha256(raw).hexdigest(), None
    digest = hashlib.sha256(mid.encode("utf-8") + b"\0" + _canonical_body(body)).hexdigest()
    return "mid:" + digest, mid


def _canonical_body(body: bytes) -> bytes:
    # Line endings and trailing blank lines are what MTAs and IMAP servers do change.
    return body.replace(b"\r\n", b"\n").rstrip(b"\n")
