"""Idempotency keys for received mail: Message-ID plus SHA-256 of the body (SPEC section 2)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rules.line_endings import normalise_line_endings

# The header block ends at the first empty line; relays and mailbox providers add
# or rewrite header fields (Received, Return-Path, X-Original-To) but leave the body.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(
    rb"^message-id[ \t]*:[ \t]*((?:.|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE
)
_ID = re.compile(rb"<([^<>\s]{1,900})>")


@dataclass(frozen=True)
class Keyed:
    """A received message with its line ends normalised, and what intake reads from it."""

    raw: bytes  # every line end CRLF, as `normalise_line_endings` gives it
    header: bytes  # the header block, as `split_message` gives it; for `recover_from_header`
    dedup_key: str
    message_id: str | None


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
    field = _first_message_id_field(header)
    if field is None:
        return None
    inner = _ID.search(field.group(1))
    value = inner.group(1) if inner is not None else field.group(1).strip()
    text = value.decode("ascii", "replace").strip()
    return text[:900] or None


def _first_message_id_field(header: bytes) -> re.Match[bytes] | None:
    """`_MESSAGE_ID.search(header)`, tried only where the name is: a regex search tries
    every position of a long header block, `bytes.find` skips to the candidates."""
    # bytes.lower() folds ASCII letters only, as IGNORECASE does for a bytes pattern; `^`
    # still holds `match` to the start of a line, so a name mid-line is passed over.
    lowered = header.lower()
    position = lowered.find(b"message-id")
    while position != -1:
        field = _MESSAGE_ID.match(header, position)
        if field is not None:
            return field
        position = lowered.find(b"message-id", position + 1)
    return None


def dedup_key(raw: bytes) -> str:
    """`mid:` + SHA-256(Message-ID, body), else `raw:` + SHA-256 of the whole message."""
    return keys(raw)[0]


def keys(raw: bytes) -> tuple[str, str | None]:
    """(dedup key, Message-ID), reading the header block once."""
    header, body = split_message(raw)
    mid = _message_id(header)
    return _key(raw, body, mid), mid


def normalise_and_key(raw: bytes) -> Keyed:
    """`normalise_line_endings`, then `split_message` and `keys` of the result, splitting
    the message once: what the IMAP watcher does for every fetched message."""
    raw = normalise_line_endings(raw)
    header, body = split_message(raw)
    mid = _message_id(header)
    return Keyed(raw, header, _key(raw, body, mid), mid)


def _key(raw: bytes, body: bytes, mid: str | None) -> str:
    if mid is None:
        return "raw:" + hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256(mid.encode("utf-8") + b"\0" + _canonical_body(body)).hexdigest()
    return "mid:" + digest


def _canonical_body(body: bytes) -> bytes:
    # Line endings and trailing blank lines are what MTAs and IMAP servers do change.
    return body.replace(b"\r\n", b"\n").rstrip(b"\n")
