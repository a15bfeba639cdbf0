"""Ban-end, sanction-end and escalation reminders fire through Jobs.tick with a fixed clock;
a lifted ban's notice is cancelled (SPEC section 7)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import cli_bans
from gateway.reminder_jobs import Jobs
from storage.models import BanRow, OutboxEntry, Timer
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_scheduler import REPORT, created, reminders, send, staff_command


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    send(gateway, REPORT, "rita@example.net", "conduct@example.org")
    yield gateway
    gateway.database.dispose()


def jobs(gw: Gateway) -> Jobs:
    return Jobs(lambda: gw.settings, gw.database, gw.secrets)


def subjects(rows: list[OutboxEntry]) -> list[str]:
    found = []
    for row in rows:
        head = (row.raw or b"").split(b"\r\n\r\n", 1)[0].decode()
        subject = next(line for line in head.split("\r\n") if line.startswith("Subject:"))
        found.append(subject)
    return found


def pending_ban_ends(gw: Gateway) -> list[Timer]:
    with gw.database.transaction() as session:
        return list(
            session.execute(
                select(Timer).where(
                    Timer.kind == "ban-end",
                    Timer.fired_at.is_(None),
                    Timer.cancelled_at.is_(None),
                )
            ).scalars()
        )


def test_a_timed_ban_s_end_is_told_to_staff_once(gw: Gateway) -> None:
    staff_command(gw, "#ban mallory@example.com for=1h\r\n")
    later = gw.now() + timedelta(hours=1, seconds=1)
    assert jobs(gw).tick(later) == 2
    assert jobs(gw).tick(later + timedelta(seconds=1)) == 0
    rows = [r for r in reminders(gw) if b"ban of this case has ended" in (r.raw or b"")]
    assert sorted(r.recipient for r in rows) == ["alice@example.org", "bob@example.org"]
    assert all("[Conduct #1] Reminder" in s for s in subjects(rows))


def test_unban_cancels_the_ban_end_notice_in_the_same_change(gw: Gateway) -> None:
    staff_command(gw, "#ban mallory@example.com for=1h\r\n")
    assert len(pending_ban_ends(gw)) == 1
    staff_command(gw, "#unban mallory@example.com\r\n")
    assert pending_ban_ends(gw) == []
    assert jobs(gw).tick(gw.now() + timedelta(hours=2)) == 0
    assert not [r for r in reminders(gw) if b"ban of this case has ended" in (r.raw or b"")]


@pytest.mark.parametrize("lifted", [0, 1])
def test_unban_of_one_ban_keeps_the_notice_of_another_ending_then(gw: Gateway, lifted: int) -> None:
    staff_command(gw, "#ban mallory@example.com for=1h\r\n#ban eve@example.com for=1h\r\n")
    with gw.database.transaction() as session:
        ids = list(session.execute(select(BanRow.id).order_by(BanRow.id)).scalars())
    assert sorted(t.ref_id for t in pending_ban_ends(gw)) == ids  # each tied to its own ban
    staff_command(gw, f"#unban {ids[lifted]}\r\n")
    assert [t.ref_id for t in pending_ban_ends(gw)] == [ids[1 - lifted]]
    assert jobs(gw).tick(gw.now() + timedelta(hours=2)) == 2


def test_cli_bans_add_for_a_case_schedules_and_bans_remove_cancels(gw: Gateway) -> None:
    settings, database = gw.settings, gw.database
    cli_bans.add_ban(
        settings,
        database,
        pattern_text="mallory@example.com",
        list_text=None,
        duration="2h",
        until=None,
        reason=None,
        case=1,
        force=False,
    )
    [timer] = pending_ban_ends(gw)
    with gw.database.transaction() as session:
        ban_id = session.execute(select(BanRow.id)).scalar_one()
    assert timer.ref_id == ban_id
    assert timer.case_number == 1
    assert jobs(gw).tick(gw.now() + timedelta(hours=3)) == 2  # it fires
    cli_bans.add_ban(
        settings,
        database,
        pattern_text="eve@example.com",
        list_text=None,
        duration="2h",
        until=None,
        reason=None,
        case=1,
        force=False,
    )
    with gw.database.transaction() as session:
        second = session.execute(select(BanRow.id).order_by(BanRow.id.desc())).scalars().first()
    assert second is not None
    cli_bans.remove_ban(settings, database, ban_id=second)
    assert pending_ban_ends(gw) == []


def test_a_timed_sanction_s_end_is_told_to_staff(gw: Gateway) -> None:
    staff_command(gw, "#sanction no-contact for=2h\r\n")
    assert jobs(gw).tick(gw.now() + timedelta(hours=1)) == 0
    assert jobs(gw).tick(gw.now() + timedelta(hours=2, seconds=1)) == 2
    rows = [r for r in reminders(gw) if b"sanction of this case has ended" in (r.raw or b"")]
    assert len(rows) == 2


def test_escalation_reminder_goes_to_the_assignee_until_escalated(gw: Gateway) -> None:
    staff_command(gw, "#assign bob@example.org\r\n")
    start = created(gw)
    assert jobs(gw).tick(start + timedelta(hours=71)) == 0
    assert jobs(gw).tick(start + timedelta(hours=72)) == 1
    [row] = [r for r in reminders(gw) if b"not yet escalated" in (r.raw or b"")]
    assert row.recipient == "bob@example.org"
    staff_command(gw, "#escalate\r\n")
    assert jobs(gw).tick(start + timedelta(hours=200)) == 1  # only the follow-up now
    assert not [
        r for r in reminders(gw)[1:] if b"not yet escalated" in (r.raw or b"") and r.id != row.id
    ]


def test_a_reply_before_the_case_became_urgent_does_not_stop_the_pages(gw: Gateway) -> None:
    staff_command(gw, "#reply\r\nThank you, we are looking into it.\r\n")
    staff_command(gw, "#urgent\r\n")
    start = created(gw)
    assert jobs(gw).tick(start + timedelta(hours=1)) == 3
    staff_command(gw, "#reply\r\nWe have acted.\r\n")
    assert jobs(gw).tick(start + timedelta(hours=2)) == 0


def test_a_remind_set_by_staff_removed_since_reaches_no_one(gw: Gateway) -> None:
    """SPEC section 5 applies commands "while that address is still staff": a reminder set
    before they left must not carry the case to them afterwards."""
    from tests.gateway.test_commands import reconfigure

    staff_command(gw, "#remind 1h check on the reporter\r\n", sender="bob@example.org")
    reconfigure(gw, "Alice Example <alice@example.org>")
    assert jobs(gw).tick(gw.now() + timedelta(hours=1, seconds=1)) == 0
    assert reminders(gw) == []
