"""Bare CR and bare LF become CRLF; CRLF is left alone; nothing else changes."""

from __future__ import annotations

import random

import pytest

from rules.line_endings import normalise_line_endings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", b""),
        (b"no line end", b"no line end"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\n\rb", b"a\r\n\r\nb"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),
        (b"a\r\n\nb", b"a\r\n\r\nb"),
        (b"\n", b"\r\n"),
        (b"\r", b"\r\n"),
        (b"\r\n", b"\r\n"),
        (b"\r\r\n\n", b"\r\n\r\n\r\n"),
    ],
)
def test_bare_cr_and_bare_lf_become_crlf(raw: bytes, expected: bytes) -> None:
    assert normalise_line_endings(raw) == expected


@pytest.mark.parametrize(
    ("smuggled", "expected"),
    [
        (b"x\n.\ny", b"x\r\n.\r\ny"),
        (b"x\r\n.\ny", b"x\r\n.\r\ny"),
        (b"x\r.\ry", b"x\r\n.\r\ny"),
        (b"x\n.\r\ny", b"x\r\n.\r\ny"),
    ],
)
def test_smuggling_line_ends_become_one_unambiguous_form(smuggled: bytes, expected: bytes) -> None:
    assert normalise_line_endings(smuggled) == expected


def test_normalising_twice_changes_nothing_more() -> None:
    raw = b"a\rb\nc\r\nd\r\r\n\n\re"
    once = normalise_line_endings(raw)
    assert normalise_line_endings(once) == once


def test_every_other_byte_is_kept() -> None:
    raw = bytes(b for b in range(256) if b not in (10, 13))
    assert normalise_line_endings(raw) == raw


def test_a_large_message_of_bare_line_ends_is_normalised_whole() -> None:
    raw = b"line\n" * 200_000 + b"cr\r" * 200_000
    result = normalise_line_endings(raw)
    assert result == b"line\r\n" * 200_000 + b"cr\r\n" * 200_000


def _three_replaces(raw: bytes) -> bytes:
    """The normalisation as it was before the already-CRLF fast path: the reference."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def test_every_short_string_of_line_ends_is_normalised_as_before() -> None:
    alphabet = (b"\r", b"\n", b"a")
    strings = [b""]
    for _ in range(8):
        strings = [s + c for s in strings for c in alphabet]
        for raw in strings:
            assert normalise_line_endings(raw) == _three_replaces(raw), raw


def test_generated_messages_are_normalised_as_before() -> None:
    rng = random.Random(4)
    pieces = [b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n", b"\n\r", b"\r\r\n", b"x", b"\xff", b"\x00"]
    fast = 0
    for _ in range(5000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:  # mostly CRLF already, the case the fast path takes
            raw = raw.replace(b"\r", b"").replace(b"\n", b"\r\n") + rng.choice(pieces)
        assert normalise_line_endings(raw) == _three_replaces(raw), raw
        # Only the fast path gives back the very object it was given a line end in.
        fast += b"\n" in raw and normalise_line_endings(raw) is raw
    assert fast > 1000
