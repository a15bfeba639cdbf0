"""Expunge dates through the real pipeline (SPEC section 7a): a ban's end dates a closed
case, and a later case naming the same accused never lets an earlier one go first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import cli_bans
from gateway.retention_job import run_retention
from storage.models import BanRow, Case
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_commands import command, run, store
from tests.gateway.test_retention_owed_mail import deliver

EXTRA = timedelta(weeks=112)


def report(n: int) -> bytes:
    return (
        f"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
        f"Subject: Report {n}\r\nMessage-ID: <ret-{n}@example.net>\r\n\r\n"
        f"Mallory was rude to me ({n}).\r\n"
    ).encode()


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    for n in (1, 2):
        store(gateway, report(n), "rita@example.net", ("conduct@example.org",))
        run(gateway)
    yield gateway
    gateway.database.dispose()


def expunge(gw: Gateway, number: int) -> datetime | None:
    with gw.database.transaction() as session:
        row = session.get(Case, number)
        assert row is not None
        return row.expunge_at


def close_banned(gw: Gateway, case: int, ban: str = "#ban mallory@example.com") -> None:
    command(gw, "#accused mallory@example.com\r\n#escalate\r\n", case=case)
    command(gw, "#notify-accused\r\nA report was made about you.\r\n", case=case)
    command(gw, f"{ban}\r\n#close banned\r\n", case=case)


def test_unban_dates_a_case_closed_banned_with_a_ban_without_end(gw: Gateway) -> None:
    close_banned(gw, 1)
    assert expunge(gw, 1) is None
    before = gw.now()
    command(gw, "#unban mallory@example.com\r\n", case=1)
    date = expunge(gw, 1)
    assert date is not None
    assert before + EXTRA <= date <= gw.now() + EXTRA


def test_bans_remove_from_the_cli_dates_the_case_too(gw: Gateway) -> None:
    close_banned(gw, 1)
    with gw.database.transaction() as session:
        ban_id = session.execute(select(BanRow.id)).scalar_one()
    before = gw.now()
    cli_bans.remove_ban(gw.settings, gw.database, ban_id=ban_id)
    date = expunge(gw, 1)
    assert date is not None
    assert before + EXTRA <= date <= gw.now() + EXTRA


def test_a_later_open_ended_case_keeps_the_earlier_one_until_its_own_date(gw: Gateway) -> None:
    command(gw, "#accused mallory@example.com\r\n#close resolved\r\n", case=1)
    resolved = expunge(gw, 1)
    assert resolved is not None
    close_banned(gw, 2)
    assert expunge(gw, 2) is None
    # Not a finite date (now + banned_extra) that could come before case 2's.
    assert expunge(gw, 1) is None
    command(gw, "#unban mallory@example.com\r\n", case=2)
    second = expunge(gw, 2)
    assert second is not None
    assert expunge(gw, 1) == max(resolved, second)


def test_no_violation_does_not_extend_earlier_cases(gw: Gateway) -> None:
    command(gw, "#accused mallory@example.com\r\n#close resolved\r\n", case=1)
    resolved = expunge(gw, 1)
    command(gw, "#accused mallory@example.com\r\n#close no-violation\r\n", case=2)
    assert expunge(gw, 1) == resolved


def test_the_daily_run_dates_what_ended_and_purges_what_is_due(gw: Gateway) -> None:
    close_banned(gw, 1, "#ban mallory@example.com")
    with gw.database.transaction() as session:
        ban = session.execute(select(BanRow)).scalar_one()
        ban.lifted_at = gw.now()  # lifted by a path that does not date cases
        ban.lifted_by = "test"
    assert expunge(gw, 1) is None
    assert run_retention(gw.settings, gw.database, gw.now()) == []
    assert expunge(gw, 1) is not None
    later = gw.now() + EXTRA + timedelta(days=1)
    deliver(gw)  # a case still owing mail waits (test_retention_owed_mail.py)
    assert run_retention(gw.settings, gw.database, later) == [1]
