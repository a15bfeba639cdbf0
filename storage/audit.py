"""The audit repository: append to the hash chain and verify it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rules.audit_chain import (
    GENESIS,
    PURGED,
    ChainEvent,
    ChainReport,
    event_digest,
    event_link,
    verify,
)
from storage.counters import peek, take_next
from storage.db import storable
from storage.models import AuditEvent


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    case: int | None
    actor: str | None
    action: str
    detail: str | None


def append(
    session: Session,
    *,
    at: datetime,
    action: str,
    actor: str | None,
    case: int | None = None,
    detail: str | dict[str, Any] | None = None,
) -> AuditRecord:
    """Add one event; the sequence counter's row lock serialises appends across instances."""
    if isinstance(detail, dict):
        detail = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    # The digest must cover what the columns will hold, or `audit verify` would call the
    # event edited: a NUL is stored as U+FFFD (storage.db.storable).
    actor = None if actor is None else storable(actor)
    detail = None if detail is None else storable(detail)
    seq = take_next(session, "audit")
    previous = (
        GENESIS
        if seq == 1
        else session.execute(
            select(AuditEvent.link).where(AuditEvent.seq == seq - 1)
        ).scalar_one_or_none()
        or GENESIS
    )
    salt = secrets.token_hex(16)
    digest = event_digest(salt, actor, detail)
    session.add(
        AuditEvent(
            seq=seq,
            at=at,
            case_number=case,
            actor=actor,
            action=action,
            detail=detail,
            salt=salt,
            digest=digest,
            link=event_link(previous, seq, case, at, action, digest),
        )
    )
    return AuditRecord(seq, at, case, actor, action, detail)


def for_case(session: Session, case: int) -> list[AuditRecord]:
    rows = session.execute(
        select(AuditEvent).where(AuditEvent.case_number == case).order_by(AuditEvent.seq)
    ).scalars()
    return [AuditRecord(r.seq, r.at, r.case_number, r.actor, r.action, r.detail) for r in rows]


def purge_case(session: Session, case: int) -> None:
    """Remove people, details and salts; digests and links stay, so the chain still verifies."""
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.case_number == case)
        .values(actor=None, detail=None, salt=None)
    )


def _events(session: Session) -> Iterator[ChainEvent]:
    rows = session.execute(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    ).scalars()
    for row in rows:
        yield ChainEvent(
            row.seq,
            row.at,
            row.case_number,
            row.action,
            row.actor,
            row.detail,
            row.salt,
            row.digest,
            row.link,
        )


def _purged_cases(session: Session) -> frozenset[int]:
    # A forged `purged` event would break its own link, so the walk still catches it.
    rows = session.execute(
        select(AuditEvent.case_number).where(AuditEvent.action == PURGED).distinct()
    ).scalars()
    return frozenset(case for case in rows if case is not None)


def verify_chain(session: Session) -> ChainReport:
    """Verify every link, and that the chain ends where the sequence counter does: an event
    missing at the end was deleted, one past the counter was inserted around append()."""
    report = verify(_events(session), _purged_cases(session))
    if report.problem is not None:
        return report
    last = peek(session, "audit")
    if last > report.count:
        return ChainReport(
            report.count,
            report.latest_link,
            f"event {report.count + 1} is deleted",
            report.count + 1,
        )
    if last < report.count:
        return ChainReport(
            report.count, report.latest_link, f"event {last + 1} is inserted", last + 1
        )
    return report


def latest_link(session: Session) -> str:
    return (
        session.execute(
            select(AuditEvent.link).order_by(AuditEvent.seq.desc()).limit(1)
        ).scalar_one_or_none()
        or GENESIS
    )
