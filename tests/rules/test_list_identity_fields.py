"""From and Sender fields however they are written: white space before the colon, UTF-8."""

from __future__ import annotations

import pytest

from rules.list_identities import Identities, IdentityProblem, identities

TAIL = b"To: dev@lists.example.org\r\nMessage-ID: <p1@example.net>\r\n\r\nbody\r\n"


@pytest.mark.parametrize("name", [b"From :", b"From\t:", b"FROM  :", b"from:"])
def test_a_from_field_is_one_whatever_space_stands_before_its_colon(name: bytes) -> None:
    found = identities(name + b" bob@banned.example\r\n" + TAIL)
    assert isinstance(found, Identities)
    assert found.from_addresses == ("bob@banned.example",)


def test_a_spaced_from_beside_a_plain_one_is_two_from_fields() -> None:
    raw = b"From : bob@banned.example\r\nFrom: ok@good.example\r\n" + TAIL
    found = identities(raw)
    assert isinstance(found, IdentityProblem)
    assert (found.reason, found.reply[:9]) == ("several-from", "550 5.6.0")


def test_a_spaced_sender_field_is_checked() -> None:
    found = identities(b"From: ok@good.example\r\nSender : bob@banned.example\r\n" + TAIL)
    assert isinstance(found, Identities)
    assert found.sender_addresses == ("bob@banned.example",)


def test_a_utf8_from_field_is_an_identity_not_a_parse_failure() -> None:
    found = identities("From: Pöster <pöster@exämple.net>\r\n".encode() + TAIL)
    assert isinstance(found, Identities)
    assert found.from_addresses == ("pöster@xn--exmple-cua.net",)


def test_a_folded_line_that_looks_like_a_field_stays_a_continuation() -> None:
    raw = b"From: ok@good.example\r\nSubject: a\r\n from : bob@banned.example\r\n" + TAIL
    found = identities(raw)
    assert isinstance(found, Identities)
    assert found.from_addresses == ("ok@good.example",)
