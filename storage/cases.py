"""The cases repository: cases, participants and the messages filed on them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from handlers.snapshot import CaseView, ParticipantView
from storage.counters import take_next
from storage.models import Case, Message, Participant

# Columns an UpdateCase effect may set; `first_*` columns are set only while still empty,
# and `last_*` ones never move back (imported mail joining a live case is dated earlier).
UPDATABLE = frozenset(
    {
        "status",
        "urgent",
        "anonymous",
        "assignee",
        "outcome",
        "outcome_note",
        "escalated_at",
        "accused_notified_at",
        "last_activity_at",
        "first_staff_mail_at",
        "closed_at",
        "expunge_at",
        "merged_into",
        "possibly_related",
        "subject",
    }
)


@dataclass(frozen=True)
class NewMessage:
    case: int | None
    direction: str  # in | out
    kind: str
    at: datetime
    message_id: str | None = None
    sender: str | None = None
    recipients: Sequence[str] = ()
    party: str | None = None
    subject: str | None = None
    text: str | None = None
    raw: bytes | None = None
    rule: str | None = None
    inbox_id: int | None = None
    outbox_id: int | None = None


def open_case(
    session: Session,
    *,
    now: datetime,
    subject: str,
    urgent: bool,
    possibly_related: int | None = None,
    imported: bool = False,
    status: str = "new",
    created_at: datetime | None = None,
    director_only: bool = False,
) -> int:
    """A new case with the next number; the counter's lock keeps numbers gapless."""
    number = take_next(session, "case")
    opened = created_at or now
    session.add(
        Case(
            number=number,
            status=status,
            subject=subject[:998],
            urgent=urgent,
            anonymous=True,
            imported=imported,
            director_only=director_only,
            possibly_related=possibly_related,
            last_activity_at=opened,
            created_at=opened,
            updated_at=now,
        )
    )
    session.flush()
    return number


def add_participant(
    session: Session,
    *,
    case: int,
    address: str,
    written: str,
    name: str,
    role: str,
    recused: bool,
    now: datetime,
) -> None:
    """Add once per address; a later role for the same person does not replace the first."""
    existing = session.execute(
        select(Participant).where(Participant.case_number == case, Participant.address == address)
    ).scalar_one_or_none()
    if existing is not None:
        existing.recused = existing.recused or recused
        return
    session.add(
        Participant(
            case_number=case,
            address=address,
            written=written,
            name=name,
            role=role,
            recused=recused,
            added_at=now,
        )
    )
    session.flush()


def update_case(
    session: Session,
    case: int,
    changes: Mapping[str, object],
    now: datetime,
) -> None:
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update case fields {sorted(unknown)}")
    row = session.get(Case, case)
    if row is None:
        raise LookupError(f"no case {case}")
    for key, value in changes.items():
        current = getattr(row, key)
        if key.startswith("first_") and current is not None:
            continue
        if key.startswith("last_") and isinstance(value, datetime) and current is not None:
            value = max(value, current)
        setattr(row, key, value)
    row.updated_at = now


def record_message(session: Session, message: NewMessage) -> int:
    row = Message(
        case_number=message.case,
        message_id=message.message_id,
        direction=message.direction,
        kind=message.kind,
        sender=message.sender,
        recipients=json.dumps(list(message.recipients)),
        party=message.party,
        subject=message.subject,
        text=message.text,
        raw=message.raw,
        rule=message.rule,
        inbox_id=message.inbox_id,
        outbox_id=message.outbox_id,
        at=message.at,
    )
    session.add(row)
    session.flush()
    return row.id


def views(session: Session, numbers: Iterable[int]) -> dict[int, CaseView]:
    wanted = sorted(set(numbers))
    if not wanted:
        return {}
    rows = (
        session.execute(select(Case).where(Case.number.in_(wanted), Case.purged_at.is_(None)))
        .scalars()
        .all()
    )
    people: dict[int, list[ParticipantView]] = {row.number: [] for row in rows}
    for p in session.execute(
        select(Participant)
        .where(Participant.case_number.in_(list(people)))
        .order_by(Participant.id)
    ).scalars():
        people[p.case_number].append(
            ParticipantView(p.address or "", p.written or "", p.name or "", p.role, p.recused)
        )
    return {
        row.number: CaseView(
            number=row.number,
            status=row.status,
            subject=row.subject or "",
            urgent=row.urgent,
            anonymous=row.anonymous,
            assignee=row.assignee,
            escalated=row.escalated_at is not None,
            accused_notified=row.accused_notified_at is not None,
            imported=row.imported,
            created_at=row.created_at,
            participants=tuple(people[row.number]),
            director_only=row.director_only,
        )
        for row in rows
    }


def ids_by_direction(
    session: Session,
    message_ids: Iterable[str],
    direction: str,
) -> dict[str, int]:
    """Message-ID -> case, for filed messages in one direction (threading rule 2)."""
    wanted = list(dict.fromkeys(message_ids))[:100]
    if not wanted:
        return {}
    rows = session.execute(
        select(Message.message_id, Message.case_number)
        .where(
            Message.message_id.in_(wanted),
            Message.direction == direction,
            Message.case_number.is_not(None),
        )
        .order_by(Message.id)
    )
    found: dict[str, int] = {}
    for message_id, case in rows:
        if message_id is not None and case is not None:
            found.setdefault(message_id, case)
    return found


def thread_of(session: Session, case: int, party: str, limit: int = 20) -> list[str]:
    """The Message-IDs this participant sent or was sent on the case, oldest first."""
    rows = session.execute(
        select(Message.message_id)
        .where(Message.case_number == case, Message.party == party, Message.message_id.is_not(None))
        .order_by(Message.id.desc())
        .limit(limit)
    ).scalars()
    return [mid for mid in reversed(list(rows)) if mid]


def history(session: Session, case: int) -> list[tuple[str, str | None, datetime, str | None]]:
    """(kind, sender, time, text) of every message received into the case, oldest first."""
    rows = session.execute(
        select(Message.kind, Message.sender, Message.at, Message.text)
        .where(Message.case_number == case, Message.direction == "in")
        .order_by(Message.at, Message.id)
    )
    return [(kind, sender, at, text) for kind, sender, at, text in rows]
