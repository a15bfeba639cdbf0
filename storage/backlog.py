"""What is waiting in the store: the figures behind the metrics gauges (SPEC section 10)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from rules.reminders import OPEN_STATUSES
from storage import inbox, outbox
from storage.models import Case


@dataclass(frozen=True)
class Backlog:
    inbox_pending: int  # stored, not yet processed: new, or quarantined awaiting a retry
    outbox_pending: int  # owed, not yet handed over
    cases_open: dict[str, int]  # by status; every open status present, 0 when none
    oldest_unacknowledged: datetime | None  # created_at of the oldest case staff never wrote on


def _open_cases() -> list[ColumnElement[bool]]:
    # The cases reminders look at: not closed, merged away or purged.
    return [Case.status != "closed", Case.merged_into.is_(None), Case.purged_at.is_(None)]


def backlog(session: Session) -> Backlog:
    inboxed = inbox.count_by_state(session)
    rows = session.execute(
        select(Case.status, func.count()).where(*_open_cases()).group_by(Case.status)
    )
    cases = dict.fromkeys(sorted(OPEN_STATUSES), 0)
    cases.update({str(status): int(count) for status, count in rows.all()})
    # Imported cases are left out as reminders leave them out: they came acknowledged
    # (or not) from the previous system, and staff take them up when they choose.
    oldest = session.scalar(
        select(func.min(Case.created_at)).where(
            *_open_cases(), Case.first_staff_mail_at.is_(None), Case.imported.is_(False)
        )
    )
    return Backlog(
        inbox_pending=inboxed.get(inbox.PENDING, 0) + inboxed.get(inbox.FAILED, 0),
        outbox_pending=outbox.count_by_state(session).get(outbox.PENDING, 0),
        cases_open=cases,
        oldest_unacknowledged=oldest,
    )
