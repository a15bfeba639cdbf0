"""Held list posts: stored with their raw bytes until released to the list server or discarded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rules.addresses import AddressError, normalise_list
from storage import audit, outbox
from storage.address_columns import usable_address
from storage.models import HeldPost

HELD = "held"
RELEASED = "released"
DISCARDED = "discarded"
EXPIRED = "expired"  # discarded by the gateway after [relay] hold_days
# A released post keeps its own Message-ID in its bytes; the outbox row needs a key of its
# own (outbox.message_id is unique, and the same post may be held for two lists).
RELEASE_KEY_DOMAIN = "held.conduct-gateway.invalid"
RELEASE_KIND = "released-post"


@dataclass(frozen=True)
class HeldRecord:
    id: int
    list: str
    sender: str | None
    subject: str | None
    reason: str
    held_at: datetime
    ban_id: int | None
    case: int | None
    envelope_sender: str | None
    envelope_recipients: tuple[str, ...]
    state: str
    decided_at: datetime | None
    decided_by: str | None


def _record(row: HeldPost) -> HeldRecord:
    return HeldRecord(
        id=row.id,
        list=row.list,
        sender=row.sender,
        subject=row.subject,
        reason=row.reason,
        held_at=row.held_at,
        ban_id=row.ban_id,
        case=row.case_number,
        envelope_sender=row.envelope_sender,
        envelope_recipients=tuple(json.loads(row.envelope_recipients)),
        state=row.state,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
    )


def _detail(row: HeldPost, **extra: Any) -> dict[str, Any]:
    return {"held": row.id, "list": row.list, "sender": row.sender, "ban": row.ban_id, **extra}


def release_key(held_id: int, copy: int = 0) -> str:
    """The outbox key of a released post's `copy`-th envelope recipient."""
    suffix = f".{copy}" if copy else ""
    return f"held-{held_id}{suffix}@{RELEASE_KEY_DOMAIN}"


def _list_key(list_address: str) -> str:
    try:
        return normalise_list(list_address)
    except AddressError:
        return list_address.strip().lower()


def hold(
    session: Session,
    *,
    list_address: str,
    sender: str | None,
    subject: str | None,
    reason: str,
    ban_id: int | None,
    case: int | None,
    envelope_sender: str | None,
    envelope_recipients: Sequence[str],
    raw: bytes,
    now: datetime,
    message_key: str | None = None,
) -> int:
    """Store a post held for one list; returns its HELD-ID. `envelope_recipients` are the
    addresses it was sent to (`dev-request@`, `dev+tag@`): a release delivers to them."""
    row = HeldPost(
        list=_list_key(list_address),
        message_key=message_key,
        # An address that cannot be one (too long for the column, say) is not kept: the
        # post itself is, whole, and the client is not told 451 forever.
        sender=usable_address(sender),
        subject=subject,
        reason=reason,
        ban_id=ban_id,
        case_number=case,
        envelope_sender=usable_address(envelope_sender),
        envelope_recipients=json.dumps(list(envelope_recipients)),
        raw=raw,
        state=HELD,
        held_at=now,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        at=now,
        action="post-held",
        actor="gateway",
        case=case,
        detail=_detail(row, reason=reason),
    )
    return row.id


def held_already(session: Session, list_address: str, message_key: str) -> int | None:
    """The HELD-ID of this message held for this list before, whatever became of it."""
    return session.execute(
        select(HeldPost.id).where(
            HeldPost.list == _list_key(list_address), HeldPost.message_key == message_key
        )
    ).scalar_one_or_none()


def list_held(session: Session) -> list[HeldRecord]:
    """Posts still waiting for a decision, oldest first."""
    rows = session.execute(
        select(HeldPost).where(HeldPost.state == HELD).order_by(HeldPost.id)
    ).scalars()
    return [_record(row) for row in rows]


def get(session: Session, held_id: int) -> HeldRecord | None:
    row = session.get(HeldPost, held_id)
    return None if row is None else _record(row)


def _take(session: Session, held_id: int) -> HeldPost | None:
    """The post, locked, while it still waits for a decision."""
    return session.execute(
        select(HeldPost).where(HeldPost.id == held_id, HeldPost.state == HELD).with_for_update()
    ).scalar_one_or_none()


def _decide(row: HeldPost, state: str, by: str | None, now: datetime) -> None:
    row.state = state
    row.decided_at = now
    row.decided_by = by
    row.raw = None  # the outbox has its own copy of a released post


def release(session: Session, held_id: int, by: str, now: datetime) -> HeldRecord | None:
    """Owe the post to the list server (outbox, route upstream); None if not held (any more)."""
    row = _take(session, held_id)
    if row is None:
        return None
    if row.raw is None:
        raise ValueError(f"held post {held_id} has no stored bytes")
    # To the addresses the post was sent to, not the list's name: a post to dev-request@
    # or dev+tag@ must not become a post to dev@.
    recipients = json.loads(row.envelope_recipients) or [row.list]
    for copy, recipient in enumerate(recipients):
        outbox.enqueue(
            session,
            outbox.NewMail(
                kind=RELEASE_KIND,
                envelope_sender=row.envelope_sender or "",
                recipient=recipient,
                message_id=release_key(row.id, copy),
                raw=row.raw,
                case=row.case_number,
                route="upstream",
            ),
            now,
        )
    _decide(row, RELEASED, by, now)
    audit.append(
        session, at=now, action="post-released", actor=by, case=row.case_number, detail=_detail(row)
    )
    return _record(row)


def discard(session: Session, held_id: int, by: str, now: datetime) -> HeldRecord | None:
    """Drop the post's bytes; None if not held (any more)."""
    row = _take(session, held_id)
    if row is None:
        return None
    _decide(row, DISCARDED, by, now)
    audit.append(
        session,
        at=now,
        action="post-discarded",
        actor=by,
        case=row.case_number,
        detail=_detail(row),
    )
    return _record(row)


def expire(session: Session, before: datetime, now: datetime) -> int:
    """Discard every post held since before `before` (now minus hold_days); returns how many."""
    rows = session.execute(
        select(HeldPost)
        .where(HeldPost.state == HELD, HeldPost.held_at < before)
        .order_by(HeldPost.id)
        .with_for_update()
    ).scalars()
    count = 0
    for row in rows:
        _decide(row, EXPIRED, None, now)
        audit.append(
            session,
            at=now,
            action="post-expired",
            actor="gateway",
            case=row.case_number,
            detail=_detail(row),
        )
        count += 1
    return count
