"""Idempotency keys: Message-ID plus the body's SHA-256, else the whole message's (SPEC 2)."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from rules.line_endings import normalise_line_endings
from rules.message_keys import (
    Keyed,
    dedup_key,
    keys,
    message_id,
    normalise_and_key,
    split_message,
)

CORPUS = sorted((Path(__file__).parent.parent / "data").glob("*.eml"))
REPORT = b"Message-ID:\r\n <r1@example.net>\r\nSubject: x\r\n\r\nbody\r\n\r\n"


def test_the_key_is_the_message_id_and_the_canonical_body() -> None:
    expected = "mid:" + hashlib.sha256(b"r1@example.net\0body").hexdigest()
    assert keys(REPORT) == (expected, "r1@example.net")
    relayed = b"Received: by mx\r\nReturn-Path: <a@example.net>\r\n" + REPORT.replace(
        b"\r\n", b"\n"
    )
    assert keys(relayed) == keys(REPORT)


def test_without_message_id_the_key_is_the_whole_message() -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    assert keys(raw) == ("raw:" + hashlib.sha256(raw).hexdigest(), None)


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.name)
def test_keys_agree_with_dedup_key_and_message_id(path: Path) -> None:
    raw = path.read_bytes()
    assert keys(raw) == (dedup_key(raw), message_id(raw))
    assert keys(raw)[1] is None or keys(raw)[0].startswith("mid:")


def _old_message_id(header: bytes) -> str | None:
    """The Message-ID as read before the `bytes.find` shortcut: one regex search."""
    pattern = re.compile(
        rb"^message-id[ \t]*:[ \t]*((?:.|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE
    )
    field = pattern.search(header)
    if field is None:
        return None
    inner = re.search(rb"<([^<>\s]{1,900})>", field.group(1))
    value = inner.group(1) if inner is not None else field.group(1).strip()
    return value.decode("ascii", "replace").strip()[:900] or None


# Lines of header blocks that the Message-ID read must get right: case, folding, a second
# Message-ID, the name mid-line or inside another name, 8-bit bytes, lone CRs.
HEADER_LINES = [
    b"Message-ID: <first@example.net>",
    b"Message-ID: <second@example.net>",
    b"message-id:<lower@example.net>",
    b"MESSAGE-ID \t: <upper@example.net> (comment)",
    b"Message-ID:",
    b" <folded@example.net>",
    b"\t<tab-folded@example.net>",
    b"Message-Id: no-brackets@example.net ",
    b"Message-ID: <>",
    b"Message-ID : <" + b"x" * 1000 + b">",
    b"X-Message-ID: <x-prefixed@example.net>",
    b"Resent-Message-ID: <resent@example.net>",
    b"Subject: see Message-ID: <in-subject@example.net>",
    b"Message-IDs: <plural@example.net>",
    b"message-id",
    b"Message-ID: <r\xe9@example.net>",
    b"Subject: caf\xc3\xa9",
    b"Received: by mx\rMessage-ID: <after-lone-cr@example.net>",
    b"To: conduct@example.org",
    b"not a field",
    b"",
]
LINE_ENDS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]
BODIES = [b"", b"body\r\n", b"body\n\n\n", b"a\rb\r\n\r\n", b"\r\n\r\nlate\r\n", b"\xff\x00\r\n"]


def _generated_messages(count: int) -> list[bytes]:
    rng = random.Random(2)
    found = []
    for _ in range(count):
        lines = [rng.choice(HEADER_LINES) for _ in range(rng.randint(0, 8))]
        raw = b"".join(line + rng.choice(LINE_ENDS) for line in lines)
        if rng.random() < 0.8:  # else no empty line: all header
            raw += rng.choice(LINE_ENDS) + rng.choice(BODIES)
        found.append(raw)
    return found


def _messages() -> list[bytes]:
    corpus = [path.read_bytes() for path in CORPUS]
    return [REPORT, b"", *corpus, *(raw.replace(b"\r\n", b"\n") for raw in corpus)]


def test_the_message_id_is_read_as_the_regex_search_read_it() -> None:
    for raw in _messages() + _generated_messages(3000):
        header, _ = split_message(raw)
        assert message_id(raw) == _old_message_id(header), raw


def test_normalise_and_key_gives_what_the_three_steps_give() -> None:
    for raw in _messages() + _generated_messages(3000):
        normalised = normalise_line_endings(raw)
        header, _ = split_message(normalised)
        key, mid = keys(normalised)
        assert normalise_and_key(raw) == Keyed(normalised, header, key, mid), raw


def test_the_generated_messages_reach_every_case() -> None:
    found = [normalise_and_key(raw) for raw in _generated_messages(3000)]
    assert sum(keyed.message_id is None for keyed in found) > 300
    assert len({keyed.message_id for keyed in found}) > 8
    assert sum(b"\r\n\r\n" not in keyed.raw for keyed in found) > 300
