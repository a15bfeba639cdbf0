"""Case rows on each backend: which UpdateCase changes stick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import cases
from storage.db import Database
from storage.models import Case

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _case(db: Database) -> int:
    with db.transaction() as session:
        return cases.open_case(session, now=NOW, subject="a report", urgent=False)


def _row(db: Database, number: int) -> Case:
    with db.transaction() as session:
        row = session.get(Case, number)
        assert row is not None
        session.expunge(row)
        return row


def test_last_activity_never_moves_back_and_first_staff_mail_is_kept(db: Database) -> None:
    number = _case(db)
    later, earlier = NOW + timedelta(hours=2), NOW - timedelta(days=30)
    with db.transaction() as session:
        cases.update_case(
            session, number, {"last_activity_at": later, "first_staff_mail_at": later}, later
        )
    with db.transaction() as session:
        # Imported mail, dated a month back, joining the live case.
        cases.update_case(
            session,
            number,
            {"last_activity_at": earlier, "first_staff_mail_at": earlier, "status": "waiting"},
            later,
        )
    row = _row(db, number)
    assert (row.last_activity_at, row.first_staff_mail_at, row.status) == (later, later, "waiting")
    with db.transaction() as session:
        cases.update_case(session, number, {"last_activity_at": later + timedelta(1)}, later)
    assert _row(db, number).last_activity_at == later + timedelta(1)
