"""What the IMAP watcher makes of a fetched message is what every other intake makes of it:
the same bytes, dedup key, Message-ID and envelope, so that a report fetched by IMAP and the
same report by SMTP or `ingest` stay one inbox entry (SPEC section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.imap_ingest import _incoming
from rules.envelope import recover
from rules.line_endings import normalise_line_endings
from storage import inbox

CONDUCT = "conduct@example.org"
CORPUS = sorted((Path(__file__).parents[1] / "data").glob("*.eml"))
ODD = [
    b"Message-ID: <a@b>\n\nbare LF only\n\n\n",
    b"Return-Path: <r@example.net>\rTo: conduct@example.org\r\rlone CR\r",
    b"X-Original-To: conduct+ops@example.org\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n\r\n",
    b"To: \xff\xfe conduct@example.org\r\n\r\n8-bit header",
    b"no header block at all",
    b"",
]


@pytest.mark.parametrize("raw", [path.read_bytes() for path in CORPUS] + ODD)
def test_a_fetched_message_is_keyed_as_any_other_intake_keys_it(raw: bytes) -> None:
    normalised = normalise_line_endings(raw)
    envelope = recover(normalised, CONDUCT)
    expected = inbox.incoming(normalised, envelope.sender, envelope.recipients or (CONDUCT,))
    assert _incoming(raw, CONDUCT) == expected
