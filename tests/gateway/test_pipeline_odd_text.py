"""Ordinary-looking reports that one backend could not store (a NUL, an over-long From)
still become a case on both, through the real pipeline (SPEC sections 4 and 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.models import Case, InboxEntry, Message, OutboxEntry, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_pipeline import run, store

NUL = "\x00"
# RFC 5321 section 4.5.3.1.3 caps a path at 256 octets: no real address is longer.
LONG_FROM = b"r" * 60 + b"@" + b".".join([b"d" * 60] * 5) + b".net"


def report(
    *,
    sender: bytes = b"Rita Reporter <rita@example.net>",
    subject: bytes = b"Harassment at the meetup",
    message_id: bytes = b"<odd@example.net>",
    body: bytes = b"Someone was rude to me at the talk.\r\n",
) -> bytes:
    return (
        b"From: " + sender + b"\r\nTo: conduct@example.org\r\nSubject: " + subject + b"\r\n"
        b"Message-ID: " + message_id + b"\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n" + body
    )


VARIANTS = {
    "nul-body": report(body=b"text with a \x00 NUL\r\n"),
    "nul-subject": report(subject=b"=?utf-8?q?bad=00subject?="),
    "nul-name": report(sender=b"=?utf-8?q?Ri=00ta?= <rita@example.net>"),
    "nul-message-id": report(message_id=b"<odd\x00one@example.net>"),
    "long-from": report(sender=LONG_FROM),
}


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_an_odd_report_opens_one_case_and_is_acknowledged(gw: Gateway, variant: str) -> None:
    raw = VARIANTS[variant]
    entry = store(gw, raw, sender="rita@example.net")
    run(gw)
    with gw.database.transaction() as session:
        row = session.get(InboxEntry, entry)
        assert row is not None
        assert row.state == "done", row.last_error
        assert session.execute(select(Case.number)).scalars().all() == [1]
        acks = session.execute(
            select(OutboxEntry.recipient).where(OutboxEntry.kind == "acknowledgement")
        ).scalars()
        assert list(acks) == ["rita@example.net"]
        [received] = session.execute(select(Message).where(Message.direction == "in")).scalars()
        assert received.raw == raw  # the bytes as they came, NUL and all
        stored = [received.subject, received.text, received.message_id]
        names = session.execute(select(Participant.name)).scalars()
        assert not any(NUL in (value or "") for value in [*stored, *names])


def test_a_nul_becomes_the_replacement_character_in_what_is_stored(gw: Gateway) -> None:
    store(gw, VARIANTS["nul-subject"])
    run(gw)
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.subject == "bad\ufffdsubject"


def test_an_over_long_from_is_no_usable_from_so_the_envelope_sender_reports(gw: Gateway) -> None:
    store(gw, VARIANTS["long-from"], sender="rita@example.net")
    run(gw)
    with gw.database.transaction() as session:
        reporters = session.execute(
            select(Participant.address, Participant.written).where(Participant.role == "reporter")
        ).all()
    assert [tuple(r) for r in reporters] == [("rita@example.net", "rita@example.net")]
