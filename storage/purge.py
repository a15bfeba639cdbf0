"""Retention (SPEC section 7a): a due case keeps its number, dates, outcome and audit chain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage import audit
from storage.models import Case, InboxEntry, Message, OutboxEntry, Participant


def due_cases(session: Session, now: datetime) -> list[int]:
    """Closed cases whose expunge date is not after now, not yet purged."""
    return list(
        session.execute(
            select(Case.number)
            .where(
                Case.closed_at.is_not(None),
                Case.expunge_at.is_not(None),
                Case.expunge_at <= now,
                Case.purged_at.is_(None),
            )
            .order_by(Case.number)
        ).scalars()
    )


def purge(session: Session, number: int, now: datetime) -> list[str]:
    """Remove bodies, addresses and names; returns the Message-IDs of its received mail
    (the IMAP watcher deletes those originals from processed_folder)."""
    received = [
        mid
        for mid in session.execute(
            select(Message.message_id).where(
                Message.case_number == number, Message.direction == "in"
            )
        ).scalars()
        if mid
    ]
    inbox_ids = [
        i
        for i in session.execute(
            select(Message.inbox_id).where(Message.case_number == number)
        ).scalars()
        if i is not None
    ]
    outbox_ids = [
        i
        for i in session.execute(
            select(Message.outbox_id).where(Message.case_number == number)
        ).scalars()
        if i is not None
    ]
    session.execute(
        update(Message)
        .where(Message.case_number == number)
        .values(raw=None, text=None, subject=None, sender=None, recipients=None, party=None)
    )
    if inbox_ids:
        session.execute(
            update(InboxEntry)
            .where(InboxEntry.id.in_(inbox_ids))
            .values(raw=b"", envelope_sender=None, envelope_recipients="[]", last_error=None)
        )
    if outbox_ids:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(outbox_ids))
            .values(raw=None, recipient="", caused_by=None, last_error=None)
        )
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.case_number == number)
        .values(raw=None, recipient="", caused_by=None)
    )
    session.execute(
        update(Participant)
        .where(Participant.case_number == number)
        .values(address=None, written=None, name=None)
    )
    session.execute(
        update(Case)
        .where(Case.number == number)
        .values(subject=None, assignee=None, outcome_note=None, purged_at=now, updated_at=now)
    )
    audit.purge_case(session, number)
    audit.append(session, at=now, action="purged", actor=None, case=number)
    return received
