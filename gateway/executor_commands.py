"""The effects of staff and moderator commands; a check that needs the database refuses here."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from handlers.effects import (
    AddBan,
    AddSanction,
    AddTimer,
    DecideHeld,
    ExtendRetention,
    LiftBan,
    MergeCase,
    Origin,
    SetRecused,
)
from handlers.snapshot import STAFF_ROLES
from rules.bans import Ban
from rules.errors import GatewayError
from rules.retention import extended
from storage import audit, bans, held, retention_dates
from storage.models import BanRow, Case, Message, Participant, Sanction, Timer


class EffectRefused(GatewayError):
    """A command that the database refuses (unknown id, already banned): all is rolled back."""

    def __init__(self, origin: Origin | None, reason: str) -> None:
        super().__init__(reason)
        self.origin = origin or Origin(0, "")
        self.reason = reason


def set_recused(session: Session, effect: SetRecused, case: int, now: datetime) -> None:
    session.execute(
        update(Participant)
        .where(Participant.case_number == case, Participant.address == effect.address)
        .values(recused=True)
    )
    audit.append(session, at=now, action="recused", actor=effect.address, case=case)


def add_ban(session: Session, effect: AddBan, case: int | None, now: datetime) -> int:
    """The new ban's id."""
    pattern = bans.stored_pattern(effect.pattern)
    existing = bans.find_active(session, pattern, effect.list_address, now)
    if existing is not None:
        raise EffectRefused(effect.origin, f"already banned (ban {existing.id})")
    return bans.add(
        session,
        pattern=pattern,
        list_address=effect.list_address,
        reason=effect.reason,
        created_by=effect.created_by,
        now=now,
        expires_at=effect.until,
        case=case,
        interim=effect.interim,
    ).id


def _bans_to_lift(session: Session, effect: LiftBan, now: datetime) -> list[Ban]:
    if effect.ban_id is not None:
        record = bans.get(session, effect.ban_id)
        return [record.ban] if record is not None and record.active(now) else []
    assert effect.pattern is not None
    pattern = bans.stored_pattern(effect.pattern)
    if effect.list_address is None and effect.allowed_lists is not None:
        # A moderator's #unban without list= means their own lists, as their #ban does.
        found = (bans.find_active(session, pattern, lst, now) for lst in effect.allowed_lists)
        return [ban for ban in found if ban is not None]
    ban = bans.find_active(session, pattern, effect.list_address, now)
    return [] if ban is None else [ban]


def lift_ban(session: Session, effect: LiftBan, now: datetime) -> None:
    found = _bans_to_lift(session, effect, now)
    if not found:
        raise EffectRefused(effect.origin, "no such ban in force")
    if effect.allowed_lists is not None and any(
        ban.list not in effect.allowed_lists for ban in found
    ):
        raise EffectRefused(effect.origin, "that ban is not on a list you moderate")
    for ban in found:
        bans.lift(session, ban.id, effect.by, now)
    if effect.retention is not None and any(ban.case is not None for ban in found):
        retention_dates.settle(session, effect.retention, now)


def add_sanction(session: Session, effect: AddSanction, case: int, now: datetime) -> None:
    session.add(
        Sanction(
            case_number=case,
            kind=effect.kind,
            at=now,
            until=effect.until,
            note=effect.note or None,
            created_by=effect.by,
        )
    )
    audit.append(
        session,
        at=now,
        action="sanction",
        actor=effect.by,
        case=case,
        detail={"kind": effect.kind, "until": effect.until.isoformat() if effect.until else None},
    )


def add_timer(
    session: Session, effect: AddTimer, case: int | None, now: datetime, ban: int | None
) -> None:
    """`ban`: the ban the same outcome added last. A `#ban` command's AddTimer follows its
    AddBan, so a ban-end notice is tied to its own ban, and lifting that ban cancels it."""
    ref = ban if effect.kind == "ban-end" else None
    session.add(
        Timer(
            kind=effect.kind,
            case_number=case,
            ref_id=ref,
            recipient=effect.recipient,
            note=effect.note,
            due_at=effect.due,
            created_at=now,
        )
    )


def decide_held(session: Session, effect: DecideHeld, now: datetime) -> None:
    if not effect.held_id.isdigit():
        raise EffectRefused(effect.origin, f"no held post {effect.held_id}")
    held_id = int(effect.held_id)
    record = held.get(session, held_id)
    if record is None:
        raise EffectRefused(effect.origin, f"no held post {effect.held_id}")
    if effect.allowed_lists is not None and record.list not in effect.allowed_lists:
        raise EffectRefused(effect.origin, "that post is not for a list you moderate")
    decided = (
        held.release(session, held_id, effect.by, now)
        if effect.release
        else held.discard(session, held_id, effect.by, now)
    )
    if decided is None:
        raise EffectRefused(effect.origin, f"held post {held_id} was already decided")


def _hidden_from(session: Session, source: Case, effect: MergeCase) -> str | None:
    """Why the sender may not see the case they would merge, or None when they may: merging
    hands them its report and every later mail on it (SPEC section 5, "Who may command")."""
    if effect.by is None:
        return None
    person = session.execute(
        select(Participant).where(
            Participant.case_number == source.number, Participant.address == effect.by
        )
    ).scalar()
    if person is not None and person.recused:
        return f"you are recused from case #{source.number}"
    if person is not None and person.role not in STAFF_ROLES:
        return f"you are the {person.role} of case #{source.number}"
    if effect.by_director:
        if source.escalated_at is None and not source.urgent:
            return f"case #{source.number} is not escalated to the executive director"
    elif source.director_only:
        # Staff configured after it opened are no recused participants of it, yet out.
        return f"case #{source.number} is for the executive director alone"
    return None


def merge_case(session: Session, effect: MergeCase, into: int, now: datetime) -> None:
    """Fold the source case's messages, people, bans and sanctions into `into`."""
    source = session.get(Case, effect.source)
    if source is None or source.purged_at is not None or source.merged_into is not None:
        raise EffectRefused(effect.origin, f"no case #{effect.source} to merge")
    hidden = _hidden_from(session, source, effect)
    if hidden is not None:
        raise EffectRefused(effect.origin, hidden)
    known = {
        person.address: person
        for person in session.execute(
            select(Participant).where(Participant.case_number == into)
        ).scalars()
    }
    for person in session.execute(
        select(Participant).where(Participant.case_number == effect.source)
    ).scalars():
        kept = known.get(person.address)
        if kept is not None:
            # Recused from either case means recused from the merged one; a party to either
            # (staff configured later can be) stays a party, never its staff member.
            kept.recused = kept.recused or person.recused
            if kept.role in STAFF_ROLES and person.role not in STAFF_ROLES:
                kept.role, kept.written, kept.name = person.role, person.written, person.name
            session.delete(person)
        else:
            person.case_number = into
    session.execute(
        update(Message).where(Message.case_number == effect.source).values(case_number=into)
    )
    session.execute(
        update(Sanction).where(Sanction.case_number == effect.source).values(case_number=into)
    )
    session.execute(
        update(BanRow).where(BanRow.case_number == effect.source).values(case_number=into)
    )
    session.execute(
        update(Timer).where(Timer.case_number == effect.source).values(case_number=into)
    )
    source.merged_into = into
    source.status = "closed"
    source.closed_at = now
    source.updated_at = now
    target = session.get(Case, into)
    source.expunge_at = target.expunge_at if target is not None else None
    audit.append(
        session, at=now, action="merged", actor=None, case=effect.source, detail={"into": into}
    )
    audit.append(
        session, at=now, action="merged-in", actor=None, case=into, detail={"from": effect.source}
    )


def file_request(session: Session, inbox_id: int | None, case: int, text: str, party: str) -> bool:
    """Move the unfiled `#on-behalf` request onto the case it opened, as its report; False
    when it is not there to move."""
    if inbox_id is None:
        return False
    unfiled = (Message.inbox_id == inbox_id) & Message.case_number.is_(None)
    if session.execute(select(Message.id).where(unfiled).limit(1)).scalar() is None:
        return False
    session.execute(
        update(Message)
        .where(unfiled)
        .values(case_number=case, kind="report", rule="on-behalf", party=party, text=text)
    )
    return True


def follow_merged_expunge(session: Session, into: int) -> None:
    """Cases merged into `into` (an empty shell each) are expunged with it (SPEC 7a)."""
    pending = [into]
    for _hop in range(100):  # merges chain; a cycle cannot form, but never loop forever
        if not pending:
            return
        number = pending.pop()
        date = session.execute(select(Case.expunge_at).where(Case.number == number)).scalar()
        merged = session.execute(
            select(Case).where(Case.merged_into == number, Case.purged_at.is_(None))
        ).scalars()
        for row in merged:
            row.expunge_at = date
            pending.append(row.number)


def extend_retention(session: Session, effect: ExtendRetention, case: int, now: datetime) -> None:
    """Earlier closed cases naming the same accused keep their data at least as long."""
    earlier = session.execute(
        select(Case)
        .join(Participant, Participant.case_number == Case.number)
        .where(
            Participant.role == "accused",
            Participant.address.in_(effect.accused),
            Case.number < case,
            Case.closed_at.is_not(None),
            Case.purged_at.is_(None),
        )
    ).scalars()
    for row in set(earlier):
        moved = extended(row.expunge_at, effect.until)
        if moved != row.expunge_at:
            row.expunge_at = moved
            audit.append(
                session,
                at=now,
                action="retention-extended",
                actor=None,
                case=row.number,
                detail=json.dumps({"by_case": case}),
            )
