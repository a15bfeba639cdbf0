"""Expunge dates that were left open (SPEC section 7a): set once the last ban has ended.

A case closed `banned` with a ban that had no end, and every earlier case naming the same
accused, keeps `expunge_at` NULL; lifting the ban is its end. Without this the data of
those cases would be kept forever.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rules import retention
from rules.retention import Retention
from storage import audit
from storage.models import BanRow, Case, Participant


def _own(session: Session, row: Case, policy: Retention) -> datetime | None:
    assert row.closed_at is not None
    assert row.outcome is not None
    ends = [
        retention.ban_end(expires, lifted)
        for expires, lifted in session.execute(
            select(BanRow.expires_at, BanRow.lifted_at).where(BanRow.case_number == row.number)
        )
    ]
    return retention.expunge_at(row.outcome, row.closed_at, policy, ends)


def _floors(session: Session, number: int) -> list[datetime | None]:
    """The dates of later closed cases that name one of this case's accused."""
    accused = select(Participant.address).where(
        Participant.case_number == number,
        Participant.role == "accused",
        Participant.address.is_not(None),
    )
    later = session.execute(
        select(Case.number, Case.expunge_at)
        .join(Participant, Participant.case_number == Case.number)
        .where(
            Participant.role == "accused",
            Participant.address.in_(accused),
            Case.number > number,
            Case.closed_at.is_not(None),
            Case.merged_into.is_(None),
            Case.outcome.in_(retention.EXTENDING_OUTCOMES),
        )
    ).all()
    return list(dict(later).values())  # one date per later case


def settle(session: Session, policy: Retention, now: datetime) -> list[int]:
    """Give a date to every closed case still without one whose bans have all ended; the
    latest cases first, so an earlier case sees the date a later one just got."""
    open_dates = (
        session.execute(
            select(Case)
            .where(
                Case.closed_at.is_not(None),
                Case.expunge_at.is_(None),
                Case.purged_at.is_(None),
                Case.merged_into.is_(None),
                Case.outcome.is_not(None),
            )
            .order_by(Case.number.desc())
            .with_for_update()
        )
        .scalars()
        .all()
    )
    dated: list[int] = []
    for row in open_dates:
        date = retention.settled(_own(session, row, policy), _floors(session, row.number))
        if date is None:
            continue
        row.expunge_at = date
        session.flush()
        dated.append(row.number)
        audit.append(
            session,
            at=now,
            action="retention-dated",
            actor=None,
            case=row.number,
            detail={"expunge_at": date.isoformat()},
        )
    return dated
