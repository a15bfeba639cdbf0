"""Bare CR and bare LF become CRLF; CRLF is left alone; nothing else changes."""

from __future__ import annotations

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
