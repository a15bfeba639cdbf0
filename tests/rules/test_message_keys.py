"""Idempotency keys: Message-ID plus the body's SHA-256, else the whole message's (SPEC 2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rules.message_keys import dedup_key, keys, message_id

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
