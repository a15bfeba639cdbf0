"""The daily digest: sent once however many looks race for it, with every count it lists;
retention runs at leader start and in the current timezone (SPEC sections 7, 7a)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from gateway.reminder_jobs import DIGEST_KEY, RETENTION_KEY, Jobs
from gateway.scheduler import Scheduler
from storage import meta
from storage.models import Case, HeldPost, InboxEntry, OutboxEntry
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_retention_owed_mail import deliver
from tests.gateway.test_scheduler import REPORT, reminders, send, staff_command


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    send(gateway, REPORT, "rita@example.net", "conduct@example.org")
    yield gateway
    gateway.database.dispose()


def digests(gw: Gateway) -> list[OutboxEntry]:
    return [r for r in reminders(gw) if b"Audit chain" in (r.raw or b"")]


def last_digest_at(gw: Gateway, when: datetime) -> None:
    with gw.database.transaction() as session:
        meta.put(session, DIGEST_KEY, when.isoformat())


def body(row: OutboxEntry) -> str:
    message = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_racing_looks_send_one_digest(gw: Gateway) -> None:
    now = gw.now()
    last_digest_at(gw, now - timedelta(days=2))
    due = now - timedelta(hours=1)
    jobs = [Jobs(lambda: gw.settings, gw.database, gw.secrets) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        sent = list(pool.map(lambda j: j.digest_if_due(due, now), jobs))
    assert sorted(sent) == [0, 0, 0, 2]
    assert len(digests(gw)) == 2  # one digest, to alice and bob


def test_leadership_and_the_one_second_look_do_not_both_send_it(gw: Gateway) -> None:
    now = gw.now()
    last_digest_at(gw, now - timedelta(days=2))
    scheduler = Scheduler(lambda: gw.settings, gw.database, gw.secrets, lambda: now)

    async def scenario() -> None:
        await scheduler._renew()  # becomes leader
        assert scheduler.leader
        await asyncio.gather(*(scheduler._digest_if_due() for _ in range(3)))

    asyncio.run(scenario())
    assert len(digests(gw)) == 2


def test_the_digest_counts_everything_it_lists(gw: Gateway) -> None:
    staff_command(gw, "#status nonsense\r\n")  # refused with a result mail
    with gw.database.transaction() as session:
        session.add(
            HeldPost(
                list="dev@lists.example.org",
                sender="mallory@example.com",
                subject="x",
                reason="banned",
                envelope_sender="mallory@example.com",
                envelope_recipients="[]",
                raw=b"x",
                state="held",
                held_at=gw.now(),
            )
        )
        entry = session.execute(select(InboxEntry)).scalars().first()
        assert entry is not None
        entry.state = "failed"
        mail = session.execute(select(OutboxEntry)).scalars().first()
        assert mail is not None
        mail.state = "failed"
    Jobs(lambda: gw.settings, gw.database, gw.secrets).digest(gw.now())
    text = body(next(r for r in digests(gw) if r.recipient == "alice@example.org"))
    assert "Held list posts waiting:             1" in text
    assert "Outbound mail that failed:           1" in text
    assert "Quarantined incoming messages:       1" in text
    assert "Refused commands (last day):         1" in text
    assert "Unfiled messages (auto-replies, …):  0" in text
    assert "latest link" in text


def test_retention_runs_at_leader_start_in_the_current_timezone(gw: Gateway) -> None:
    staff_command(gw, "#close no-violation\r\n")
    deliver(gw)  # a case still owing mail waits (test_retention_owed_mail.py)
    tokyo = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, 03:00 in UTC
    with gw.database.transaction() as session:
        meta.put(session, RETENTION_KEY, datetime(2026, 11, 24, 4, 0, tzinfo=UTC).isoformat())
        case = session.get(Case, 1)
        assert case is not None
        case.expunge_at = now - timedelta(hours=1)
    holder = {"settings": gw.settings}
    scheduler = Scheduler(lambda: holder["settings"], gw.database, gw.secrets, lambda: now)
    # The settings holder, as after SIGHUP: 03:17 in Tokyo (18:17 UTC yesterday) is past.
    holder["settings"] = replace(
        gw.settings, reminders=replace(gw.settings.reminders, timezone=tokyo)
    )

    async def scenario() -> None:
        await scheduler.start()
        try:
            for _ in range(100):
                with gw.database.transaction() as session:
                    row = session.get(Case, 1)
                    assert row is not None
                    if row.purged_at is not None:
                        return
                await asyncio.sleep(0.1)
            raise AssertionError("retention did not run at leader start")
        finally:
            await scheduler.stop()

    asyncio.run(scenario())
    with gw.database.transaction() as session:
        last = meta.get(session, RETENTION_KEY)
    assert last == now.isoformat()
    # In UTC 03:17 is still ahead: the same look would not have run it.
    assert datetime.combine(now.date(), time(3, 17), tzinfo=UTC) > now
