"""Read-side of cases for the CLI and exports: whole cases as plain dataclasses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import audit, bans
from storage.audit import AuditRecord
from storage.bans import BanRecord
from storage.models import Case, Message, OutboxEntry, Participant, Sanction


@dataclass(frozen=True)
class CaseSummary:
    number: int
    status: str
    subject: str | None
    reporter: str | None
    anonymous: bool
    urgent: bool
    assignee: str | None
    outcome: str | None
    escalated: bool
    accused_notified: bool
    imported: bool
    expunge_at: datetime | None
    created_at: datetime
    updated_at: datetime
    messages: int


@dataclass(frozen=True)
class MessageRecord:
    message_id: str | None
    direction: str
    kind: str
    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    at: datetime
    rule: str | None


@dataclass(frozen=True)
class SanctionRecord:
    kind: str
    at: datetime
    until: datetime | None
    note: str | None


@dataclass(frozen=True)
class CaseDetail:
    summary: CaseSummary
    participants: tuple[tuple[str, str], ...]  # (address, role)
    messages: tuple[MessageRecord, ...]
    events: tuple[AuditRecord, ...]
    bans: tuple[BanRecord, ...]
    sanctions: tuple[SanctionRecord, ...]


def _reporters(session: Session, numbers: list[int]) -> dict[int, str]:
    rows = session.execute(
        select(Participant.case_number, Participant.address).where(
            Participant.case_number.in_(numbers), Participant.role == "reporter"
        )
    )
    return {case: address for case, address in rows if address}


def _summary(row: Case, reporter: str | None, messages: int) -> CaseSummary:
    return CaseSummary(
        number=row.number,
        status=row.status,
        subject=row.subject,
        reporter=reporter,
        anonymous=row.anonymous,
        urgent=row.urgent,
        assignee=row.assignee,
        outcome=row.outcome,
        escalated=row.escalated_at is not None,
        accused_notified=row.accused_notified_at is not None,
        imported=row.imported,
        expunge_at=row.expunge_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        messages=messages,
    )


def summaries(session: Session, status: str | None = None) -> list[CaseSummary]:
    """Cases, newest first (SPEC section 9).

    By when each case was opened, not by number: an imported case takes the next number
    but keeps its original, older date, and belongs below the live cases.
    """
    query = select(Case).order_by(Case.created_at.desc(), Case.number.desc())
    if status is not None:
        query = query.where(Case.status == status)
    rows = session.execute(query).scalars().all()
    numbers = [row.number for row in rows]
    counts = {
        int(case): int(n)
        for case, n in session.execute(
            select(Message.case_number, func.count())
            .where(Message.case_number.in_(numbers))
            .group_by(Message.case_number)
        )
        if case is not None
    }
    reporters = _reporters(session, numbers)
    return [_summary(row, reporters.get(row.number), counts.get(row.number, 0)) for row in rows]


def detail(session: Session, number: int) -> CaseDetail | None:
    row = session.get(Case, number)
    if row is None:
        return None
    people = [
        (address, role)
        for address, role in session.execute(
            select(Participant.address, Participant.role)
            .where(Participant.case_number == number)
            .order_by(Participant.id)
        )
    ]
    messages = (
        session.execute(
            select(Message).where(Message.case_number == number).order_by(Message.at, Message.id)
        )
        .scalars()
        .all()
    )
    sanctions = (
        session.execute(
            select(Sanction).where(Sanction.case_number == number).order_by(Sanction.at)
        )
        .scalars()
        .all()
    )
    reporter = next((a for a, role in people if role == "reporter"), None)
    return CaseDetail(
        summary=_summary(row, reporter, len(messages)),
        participants=tuple((a or "", role) for a, role in people),
        messages=tuple(
            MessageRecord(
                m.message_id,
                m.direction,
                m.kind,
                m.sender,
                tuple(json.loads(m.recipients or "[]")),
                m.subject,
                m.at,
                m.rule,
            )
            for m in messages
        ),
        events=tuple(audit.for_case(session, number)),
        bans=tuple(bans.for_case(session, number)),
        sanctions=tuple(SanctionRecord(s.kind, s.at, s.until, s.note) for s in sanctions),
    )


def raw_messages(session: Session, number: int) -> Iterator[tuple[str, datetime, bytes]]:
    """(direction, time, bytes) of every message in and out, oldest first, for an mbox."""
    rows = session.execute(
        select(Message.direction, Message.at, Message.raw, OutboxEntry.raw)
        .outerjoin(OutboxEntry, OutboxEntry.id == Message.outbox_id)
        .where(Message.case_number == number)
        .order_by(Message.at, Message.id)
        .execution_options(yield_per=50)
    )
    for direction, at, raw, sent in rows:
        data = raw if raw is not None else sent
        if data:
            yield direction, at, data
