"""The Received: trace field: RFC 5321 clauses, folding, a sanitised HELO, no recipient leaks."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rules.trace import FOLD_AT, HELO_LIMIT, received_field

NOW = datetime(2030, 5, 7, 9, 30, tzinfo=UTC)


def field(**changes: object) -> bytes:
    values: dict[str, object] = {
        "from_helo": "mail.example.net",
        "from_ip": "192.0.2.10",
        "by_host": "gateway.example.org",
        "protocol": "ESMTPS",
        "queue_id": "4QxYz12",
        "recipient": None,
        "now": NOW,
    }
    values.update(changes)
    return received_field(**values)  # type: ignore[arg-type]


def unfolded(raw: bytes) -> str:
    return raw.decode("utf-8").replace("\r\n\t", " ").removesuffix("\r\n")


def test_the_field_has_every_clause_in_rfc_5321_order_and_ends_in_crlf() -> None:
    raw = field()
    assert raw.endswith(b"\r\n")
    assert unfolded(raw) == (
        "Received: from mail.example.net ([192.0.2.10]) by gateway.example.org"
        " with ESMTPS id 4QxYz12; Tue, 07 May 2030 09:30:00 +0000"
    )


def test_lines_are_folded_with_crlf_and_tab_and_stay_within_78_characters() -> None:
    raw = field(recipient="announce@lists.example.org")
    lines = raw.removesuffix(b"\r\n").split(b"\r\n")
    assert len(lines) > 1
    assert all(len(line) <= FOLD_AT for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:])
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_the_standard_library_reads_the_field_back_with_its_date() -> None:
    message = email.message_from_bytes(
        field() + b"Subject: x\r\n\r\nbody\r\n", policy=email.policy.default
    )
    value = str(message["Received"])
    assert value.startswith("from mail.example.net ([192.0.2.10]) by gateway.example.org")
    assert message["Received"].defects == ()
    assert email.utils.parsedate_to_datetime(value.rpartition(";")[2].strip()) == NOW


def test_a_single_recipient_is_named_in_a_for_clause() -> None:
    assert "for <announce@lists.example.org>;" in unfolded(
        field(recipient="announce@lists.example.org")
    )


def test_without_a_recipient_there_is_no_for_clause() -> None:
    """Callers pass None when there are several: naming them would tell each who else got it."""
    assert " for " not in unfolded(field(recipient=None))


def test_a_recipient_that_could_break_the_field_is_left_out() -> None:
    assert " for " not in unfolded(field(recipient="a@b.example>\r\nX-Evil: 1"))


def test_the_queue_id_clause_is_left_out_when_there_is_none() -> None:
    assert " id " not in unfolded(field(queue_id=None))


@pytest.mark.parametrize(
    "helo",
    [
        "evil.example\r\nX-Injected: yes",
        "evil.example\nX-Injected: yes",
        "evil (comment) ; by forged.example",
        "évil\x00\x1b[31m.example",
    ],
)
def test_a_hostile_helo_cannot_add_lines_comments_or_clauses(helo: str) -> None:
    raw = field(from_helo=helo)
    message = email.message_from_bytes(raw + b"Subject: x\r\n\r\n", policy=email.policy.default)
    assert list(message.keys()) == ["Received", "Subject"]
    text = unfolded(raw)
    assert text.count("(") == 1  # only the address comment
    assert text.count(";") == 1  # only before the date
    assert all(32 <= ord(ch) < 127 for ch in text)


def test_a_long_helo_is_cut() -> None:
    text = unfolded(field(from_helo="a" * 1000 + ".example"))
    assert "a" * HELO_LIMIT in text
    assert "a" * (HELO_LIMIT + 1) not in text


def test_an_empty_helo_reads_unknown() -> None:
    assert unfolded(field(from_helo="  ")).startswith("Received: from unknown ([192.0.2.10])")


@pytest.mark.parametrize(
    ("peer", "literal"),
    [
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("::ffff:192.0.2.7", "[192.0.2.7]"),
        ("not an address", "unknown"),
    ],
)
def test_the_client_address_is_an_rfc_5321_address_literal(peer: str, literal: str) -> None:
    assert f"({literal})" in unfolded(field(from_ip=peer))


def test_the_date_keeps_the_given_offset() -> None:
    offset = datetime(2030, 5, 7, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    assert unfolded(field(now=offset)).endswith("; Tue, 07 May 2030 11:30:00 +0200")


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        field(now=datetime(2030, 5, 7, 9, 30))  # noqa: DTZ001 -- the case under test
