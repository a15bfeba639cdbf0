"""Retention never destroys mail still owed (SPEC sections 2 and 7a): a due case whose
outbox rows are not yet sent or failed for good waits for the next run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway import retention_job
from gateway.retention_job import run_retention
from gateway.sender import OutboxSender
from storage import outbox, purge
from storage.models import Case, OutboxEntry
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_commands import REPORT, command, run, second_case, store
from tests.serve_process import cli


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    store(gateway, REPORT, "rita@example.net", ("conduct@example.org",))
    run(gateway)
    yield gateway
    gateway.database.dispose()


def deliver(gw: Gateway) -> None:
    """Send every owed mail (the test gateway's smarthost is a Maildir)."""
    sender = OutboxSender(lambda: gw.settings, gw.database, gw.now)
    while asyncio.run(sender.deliver_once()):
        pass


def delivered_sizes(gw: Gateway) -> list[int]:
    out = gw.path.parent / "out" / "new"
    return sorted(p.stat().st_size for p in out.iterdir()) if out.exists() else []


def pending(gw: Gateway) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(
            session.execute(
                select(OutboxEntry).where(OutboxEntry.state == outbox.PENDING)
            ).scalars()
        )


def purged_at(gw: Gateway, number: int = 1) -> datetime | None:
    with gw.database.transaction() as session:
        row = session.get(Case, number)
        assert row is not None
        return row.purged_at


def soon(gw: Gateway) -> datetime:
    return gw.now() + timedelta(seconds=1)  # no-violation keeps 0 days


def test_a_due_case_whose_mail_is_still_owed_is_postponed_and_its_mail_kept(
    gw: Gateway,
) -> None:
    command(gw, "#close no-violation\r\n")
    owed = pending(gw)
    assert owed  # the acknowledgement, the staff copies, the result of #close
    assert run_retention(gw.settings, gw.database, soon(gw)) == []
    assert purged_at(gw) is None
    assert [(r.id, r.recipient, r.raw) for r in pending(gw)] == [
        (r.id, r.recipient, r.raw) for r in owed
    ]
    deliver(gw)
    sizes = delivered_sizes(gw)
    assert len(sizes) == len(owed)
    assert all(size > 0 for size in sizes)
    assert run_retention(gw.settings, gw.database, soon(gw)) == [1]
    assert purged_at(gw) is not None


def test_mail_that_failed_for_good_does_not_hold_the_purge(gw: Gateway) -> None:
    command(gw, "#close no-violation\r\n")
    assert pending(gw)
    with gw.database.transaction() as session:  # as the sender records a 5xx or its give-up
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.state == outbox.PENDING)
            .values(state=outbox.FAILED, last_error="550 5.1.1 no such user")
        )
    assert run_retention(gw.settings, gw.database, soon(gw)) == [1]


def test_the_run_says_how_many_it_postponed_and_why(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    command(gw, "#close no-violation\r\n")
    owed = len(pending(gw))
    with caplog.at_level(logging.INFO, logger="conduct_gateway.retention"):
        done = retention_job.apply(gw.settings, gw.database, soon(gw))
    assert (done.purged, done.postponed) == ([], {1: owed})
    [record] = [r for r in caplog.records if r.getMessage() == "purge-postponed"]
    assert record.__dict__["fields"] == {"case": 1, "reason": "mail-pending", "mails": owed}


def test_the_plan_lists_what_would_go_apart_from_what_waits_for_its_mail(gw: Gateway) -> None:
    command(gw, "#close no-violation\r\n")
    with gw.database.transaction() as session:
        plan = purge.plan(session, soon(gw))
    assert (plan.ready, plan.postponed) == ([], {1: len(pending(gw))})
    deliver(gw)
    with gw.database.transaction() as session:
        plan = purge.plan(session, soon(gw))
    assert (plan.ready, plan.postponed) == ([1], {})


def test_a_merged_case_s_owed_mail_holds_its_target_which_carries_its_messages(
    gw: Gateway,
) -> None:
    """Case 2's acknowledgement is filed with its messages, which the merge moves to 1:
    purging 1 would blank it."""
    second_case(gw)
    command(gw, "#merge 2\r\n")
    command(gw, "#close no-violation\r\n")
    with gw.database.transaction() as session:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.case_number != 2)
            .values(state=outbox.SENT, sent_at=gw.now())
        )
        plan = purge.plan(session, soon(gw))
    assert plan.ready == []
    assert set(plan.postponed) == {1, 2}
    assert run_retention(gw.settings, gw.database, soon(gw)) == []
    deliver(gw)
    assert all(size > 0 for size in delivered_sizes(gw))
    assert run_retention(gw.settings, gw.database, soon(gw)) == [1, 2]


def test_cases_purge_says_which_cases_wait_for_their_mail(gw: Gateway) -> None:
    command(gw, "#close no-violation\r\n")
    dry = cli(gw.path, "cases", "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    owed = len(pending(gw))
    assert dry.stdout.decode().strip() == "no case is due"
    assert f"case 1 would wait: {owed} of its mails are still in the outbox" in dry.stderr.decode()
    done = cli(gw.path, "cases", "purge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("purged 0 cases")
    assert f"case 1 waits: {owed} of its mails" in done.stderr.decode()
    deliver(gw)
    assert cli(gw.path, "cases", "purge", "--dry-run").stdout.decode().split() == ["1"]
    assert cli(gw.path, "cases", "purge").stdout.decode().startswith("purged 1 cases: 1")
