"""Reminders, the digest, retention and the leader lease against real storage."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.pipeline import Pipeline
from gateway.reminder_jobs import Jobs
from gateway.retention_job import run_retention
from gateway.scheduler import Scheduler
from rules.tokens import reply_token
from storage import audit, inbox
from storage.db import Database
from storage.models import Case, Message, OutboxEntry, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_retention_owed_mail import deliver

REPORT = (
    b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: A report\r\n"
    b"Message-ID: <s-rep1@example.net>\r\n\r\nSomething happened.\r\n"
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    send(gateway, REPORT, "rita@example.net", "conduct@example.org")
    yield gateway
    gateway.database.dispose()


counter = iter(range(1, 100000))


def send(gw: Gateway, raw: bytes, sender: str, to: str) -> None:
    with gw.database.transaction() as session:
        inbox.store(
            session, raw=raw, envelope_sender=sender, recipients=(to,), source="smtp", now=gw.now()
        )
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def staff_command(gw: Gateway, body: str, sender: str = "alice@example.org") -> None:
    token = reply_token(gw.secrets.current, 1, sender)
    to = f"conduct+1-{token}@example.org"
    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: x\r\nMessage-ID: <sc{next(counter)}@x>"
        f"\r\n\r\n{body}"
    ).encode()
    send(gw, raw, sender, to)


def reminders(gw: Gateway) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(
            session.execute(
                select(OutboxEntry).where(OutboxEntry.kind == "reminder").order_by(OutboxEntry.id)
            ).scalars()
        )


def created(gw: Gateway) -> datetime:
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        return case.created_at


def test_the_acknowledgement_reminder_goes_to_staff_and_repeats(gw: Gateway) -> None:
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    start = created(gw)
    assert jobs.tick(start + timedelta(hours=23)) == 0
    assert jobs.tick(start + timedelta(hours=24)) == 2
    assert jobs.tick(start + timedelta(hours=24, minutes=1)) == 0
    rows = reminders(gw)
    assert sorted(r.recipient for r in rows) == ["alice@example.org", "bob@example.org"]
    message = email.message_from_bytes(rows[0].raw or b"", policy=email.policy.default)
    assert message["Subject"].startswith("[Conduct #1] Reminder")
    assert message["Reply-To"] == (
        f"conduct+1-{reply_token(gw.secrets.current, 1, rows[0].recipient)}@example.org"
    )
    assert jobs.tick(start + timedelta(hours=48)) == 2


def test_a_staff_command_first_prevents_the_reminder(gw: Gateway) -> None:
    staff_command(gw, "#status investigating\r\n")
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    assert jobs.tick(created(gw) + timedelta(hours=25)) == 0


def test_urgent_pages_repeat_until_the_reporter_gets_a_reply(gw: Gateway) -> None:
    staff_command(gw, "#urgent\r\n")
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    start = created(gw)
    assert jobs.tick(start + timedelta(hours=1)) == 3  # staff and the director
    assert "ed@example.org" in {r.recipient for r in reminders(gw)}
    assert jobs.tick(start + timedelta(hours=2)) == 3
    staff_command(gw, "#reply\r\nWe are on it.\r\n")
    assert jobs.tick(start + timedelta(hours=3)) == 0


def test_remind_fires_once_to_its_sender(gw: Gateway) -> None:
    staff_command(gw, "#remind 2s check the logs\r\n")
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    later = gw.now() + timedelta(seconds=3)
    assert jobs.tick(later) == 1
    assert jobs.tick(later + timedelta(seconds=1)) == 0
    [row] = reminders(gw)
    assert row.recipient == "alice@example.org"
    assert b"check the logs" in (row.raw or b"")


def test_the_digest_lists_open_cases_but_not_to_recused_staff(gw: Gateway) -> None:
    staff_command(gw, "#recuse\r\n", sender="bob@example.org")
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    now = gw.now()
    assert jobs.digest(now) == 2
    by_reader = {r.recipient: (r.raw or b"").decode() for r in reminders(gw)}
    assert "#1 " in by_reader["alice@example.org"]
    assert "#1 " not in by_reader["bob@example.org"]
    with gw.database.transaction() as session:
        link = audit.latest_link(session)
    assert link[:40] in by_reader["alice@example.org"].replace("=\r\n", "")
    assert jobs.digest_if_due(now - timedelta(minutes=1), now) == 0  # the one just sent
    assert jobs.digest_if_due(now + timedelta(minutes=1), now + timedelta(minutes=2)) == 2


def test_retention_purges_people_and_bodies_and_the_chain_still_verifies(gw: Gateway) -> None:
    staff_command(gw, "#close no-violation\r\n")
    deliver(gw)  # a case still owing mail waits (test_retention_owed_mail.py)
    assert run_retention(gw.settings, gw.database, gw.now() + timedelta(seconds=1)) == [1]
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.purged_at is not None
        assert case.outcome == "no-violation"
        assert case.subject is None
        assert all(
            m.raw is None and m.text is None
            for m in session.execute(select(Message).where(Message.case_number == 1)).scalars()
        )
        assert all(p.address is None for p in session.execute(select(Participant)).scalars())
        assert audit.verify_chain(session).problem is None
        actions = [e.action for e in audit.for_case(session, 1)]
    assert actions[-1] == "purged"


def test_a_case_not_yet_due_is_kept(gw: Gateway) -> None:
    staff_command(gw, "#close resolved\r\n")
    assert run_retention(gw.settings, gw.database, gw.now() + timedelta(days=1)) == []


def scheduler(url: str, gw: Gateway) -> Scheduler:
    database = Database(url)
    return Scheduler(lambda: gw.settings, database, gw.secrets, lambda: datetime.now(UTC))


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_leader_among_instances_and_takeover_after_its_lease(
    gw: Gateway, backend: str, database_url: str
) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        first, second = scheduler(database_url, gw), scheduler(database_url, gw)
        await first._renew()
        await second._renew()
        both = first.leader and second.leader
        either = first.leader or second.leader
        # The leader dies without releasing: the other takes over after the lease.
        first.leader = False
        with first.database.transaction() as session:
            session.execute(
                update(__import__("storage.models", fromlist=["Lease"]).Lease).values(
                    expires_at=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
        await second._renew()
        took_over = second.leader
        first.database.dispose()
        second.database.dispose()
        return both, either, took_over

    both, either, took_over = asyncio.run(scenario())
    assert not both
    assert either
    assert took_over


def test_a_new_install_has_missed_no_digest_but_a_restart_catches_up(gw: Gateway) -> None:
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    now = gw.now()
    assert jobs.digest_if_due(now - timedelta(hours=1), now) == 0  # first start: nothing
    assert jobs.digest_if_due(now + timedelta(hours=23), now + timedelta(hours=24)) == 2
    assert jobs.digest_if_due(now + timedelta(hours=23), now + timedelta(hours=25)) == 0
