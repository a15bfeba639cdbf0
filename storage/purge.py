"""Retention (SPEC section 7a): a due case keeps its number, dates, outcome and audit chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from storage import audit, outbox
from storage.models import (
    BanRow,
    Case,
    Confirmation,
    HeldPost,
    InboxEntry,
    Message,
    OutboxEntry,
    Participant,
    PendingOriginal,
    Sanction,
    Timer,
)

PURGED_PATTERN = "(purged)"  # an ended ban of a purged case; no address looks like it


@dataclass(frozen=True)
class Plan:
    """What a retention run would do now."""

    ready: list[int]  # due, and owing no mail: purged by the run
    postponed: dict[int, int]  # due, but case -> its outbox rows still pending: kept for now


def _due(case: type[Case], now: datetime) -> ColumnElement[bool]:
    return and_(case.closed_at.is_not(None), case.expunge_at.is_not(None), case.expunge_at <= now)


def due_cases(session: Session, now: datetime) -> list[int]:
    """Closed cases whose expunge date is not after now, not yet purged; and cases merged
    into one that is due or purged, whatever date they were given (a merged case's mail
    lives on in its target and goes with it)."""
    target = aliased(Case)
    merged = (
        select(Case.number)
        .join(target, Case.merged_into == target.number)
        .where(or_(target.purged_at.is_not(None), _due(target, now)))
    )
    return list(
        session.execute(
            select(Case.number)
            .where(Case.purged_at.is_(None), or_(_due(Case, now), Case.number.in_(merged)))
            .order_by(Case.number)
        ).scalars()
    )


def plan(session: Session, now: datetime) -> Plan:
    """The due cases, split by whether they still owe mail (see `owed_mail`)."""
    ready: list[int] = []
    postponed: dict[int, int] = {}
    for number in due_cases(session, now):
        owed = owed_mail(session, number)
        if owed:
            postponed[number] = owed
        else:
            ready.append(number)
    return Plan(ready, postponed)


def owed_mail(session: Session, number: int) -> int:
    """The case's outbox rows still pending (neither sent nor failed for good).

    Purge blanks a case's outbox rows; one still pending would then go out empty and to
    nobody (a 0-byte file, `RCPT TO:<>`) and be marked sent: the acknowledgement, staff
    copies or result mail of a case closed `no-violation` (due at once) lost to a
    smarthost outage over the nightly run. Such a case waits: the sender settles every
    row within its give-up age, and a later run takes the case.
    """
    pending = session.execute(
        select(func.count())
        .select_from(OutboxEntry)
        .where(_outbox_of(session, number), OutboxEntry.state == outbox.PENDING)
    ).scalar_one()
    return int(pending)


def _outbox_of(session: Session, number: int) -> ColumnElement[bool]:
    """The outbox rows a purge of the case blanks: its own, and those its messages name
    (a merged case's mail came with its messages)."""
    outbox_ids = _ids(session, select(Message.outbox_id).where(Message.case_number == number))
    if not outbox_ids:
        return OutboxEntry.case_number == number
    return or_(OutboxEntry.case_number == number, OutboxEntry.id.in_(outbox_ids))


def purge(session: Session, number: int, now: datetime, *, imap_originals: bool) -> int:
    """Remove bodies, addresses, names and notes, unless the case still owes mail.

    Returns 0 when purged, else how many outbox rows it owes (`owed_mail`): then nothing
    is changed. With `imap_originals` the Message-IDs of its received mail are kept as
    pending until their IMAP originals are deleted (`originals_pending`,
    `originals_deleted`); the case's own rows keep none.
    """
    # Locked first, so that on PostgreSQL mail filed on the case by a transaction still
    # running is either seen below (it committed first) or queued behind this purge.
    session.execute(select(Case.number).where(Case.number == number).with_for_update())
    owed = owed_mail(session, number)
    if owed:
        return owed
    received = sorted(
        {
            mid
            for mid in session.execute(
                select(Message.message_id).where(
                    Message.case_number == number, Message.direction == "in"
                )
            ).scalars()
            if mid
        }
    )
    inbox_ids = _ids(session, select(Message.inbox_id).where(Message.case_number == number))
    session.execute(
        update(Message)
        .where(Message.case_number == number)
        .values(
            raw=None,
            text=None,
            subject=None,
            sender=None,
            recipients=None,
            party=None,
            message_id=None,
        )
    )
    if inbox_ids:
        session.execute(
            update(InboxEntry)
            .where(InboxEntry.id.in_(inbox_ids))
            .values(
                raw=b"",
                message_id=None,
                envelope_sender=None,
                envelope_recipients="[]",
                last_error=None,
            )
        )
        # Moderation commands that came in with this case's mail.
        session.execute(
            update(Confirmation)
            .where(Confirmation.inbox_id.in_(inbox_ids))
            .values(sender="", commands="")
        )
    session.execute(
        update(OutboxEntry)
        .where(_outbox_of(session, number))
        .values(raw=None, recipient="", caused_by=None, last_error=None)
    )
    session.execute(
        update(Participant)
        .where(Participant.case_number == number)
        .values(address=None, written=None, name=None)
    )
    session.execute(update(Sanction).where(Sanction.case_number == number).values(note=None))
    session.execute(
        update(Timer)
        .where(Timer.case_number == number)
        .values(note=None, recipient=None, cancelled_at=func.coalesce(Timer.cancelled_at, now))
    )
    _purge_bans(session, number, now)
    _purge_held(session, number, now)
    session.execute(
        update(Case)
        .where(Case.number == number)
        .values(subject=None, assignee=None, outcome_note=None, purged_at=now, updated_at=now)
    )
    audit.purge_case(session, number)
    audit.append(session, at=now, action="purged", actor=None, case=number)
    if imap_originals:
        session.add_all(
            PendingOriginal(case_number=number, message_id=mid, created_at=now) for mid in received
        )
    return 0


def _ids(session: Session, query: Select[Any]) -> list[int]:
    return [i for i in session.execute(query).scalars() if i is not None]


def _purge_bans(session: Session, number: int, now: datetime) -> None:
    """A ban still in force keeps its pattern (it is still enforced); one that ended keeps
    only its dates and scope."""
    ended = or_(
        BanRow.lifted_at.is_not(None),
        (BanRow.expires_at.is_not(None)) & (BanRow.expires_at <= now),
    )
    session.execute(
        update(BanRow)
        .where(BanRow.case_number == number, ended)
        .values(pattern=PURGED_PATTERN, reason=None)
    )
    session.execute(update(BanRow).where(BanRow.case_number == number).values(reason=None))


def _purge_held(session: Session, number: int, now: datetime) -> None:
    """Held posts linked to the case: a post still waiting is discarded with it."""
    session.execute(
        update(HeldPost)
        .where(HeldPost.case_number == number, HeldPost.state == "held")
        .values(state="discarded", decided_at=now, decided_by="retention")
    )
    session.execute(
        update(HeldPost)
        .where(HeldPost.case_number == number)
        .values(
            raw=None,
            sender=None,
            subject=None,
            envelope_sender=None,
            envelope_recipients="[]",
            reason="",
        )
    )


def originals_pending(session: Session) -> list[str]:
    """Message-IDs whose IMAP originals are still to be deleted, oldest first."""
    return list(
        dict.fromkeys(
            session.execute(
                select(PendingOriginal.message_id).order_by(PendingOriginal.id)
            ).scalars()
        )
    )


def originals_deleted(session: Session, message_ids: Sequence[str]) -> None:
    """The IMAP server has no longer any of these (deleted now, or found nowhere)."""
    if message_ids:
        session.execute(
            delete(PendingOriginal).where(PendingOriginal.message_id.in_(list(message_ids)))
        )
