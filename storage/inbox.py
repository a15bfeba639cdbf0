"""The inbox: raw received mail, committed before it is acknowledged, processed afterwards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rules.message_keys import dedup_key, message_id
from storage.claims import claim
from storage.models import InboxEntry

PENDING = "pending"
DONE = "done"
FAILED = "failed"  # kept (quarantined) and retried with back-off
SOURCES = ("smtp", "imap", "ingest", "import")


@dataclass(frozen=True)
class Stored:
    id: int
    duplicate: bool


@dataclass(frozen=True)
class InboxMessage:
    id: int
    source: str
    envelope_sender: str | None
    envelope_recipients: tuple[str, ...]
    raw: bytes
    message_id: str | None
    received_at: datetime
    attempts: int


def store(
    session: Session,
    *,
    raw: bytes,
    envelope_sender: str | None,
    recipients: list[str] | tuple[str, ...],
    source: str,
    now: datetime,
) -> Stored:
    """Insert once per dedup key; a duplicate adds its recipients while still unprocessed."""
    if source not in SOURCES:
        raise ValueError(f"unknown inbox source {source!r}")
    key = dedup_key(raw)
    values = {
        "dedup_key": key,
        "message_id": message_id(raw),
        "source": source,
        "envelope_sender": envelope_sender,
        "envelope_recipients": json.dumps(list(recipients)),
        "raw": raw,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(InboxEntry)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(InboxEntry.id)
    )
    new_id = session.execute(statement).scalar_one_or_none()
    if new_id is not None:
        return Stored(new_id, duplicate=False)
    existing = session.execute(
        select(InboxEntry).where(InboxEntry.dedup_key == key).with_for_update()
    ).scalar_one()
    if existing.state == PENDING:
        # The same message to several conduct addresses, delivered separately, is still
        # processed once, routed by the most specific address (SPEC section 2).
        merged = list(dict.fromkeys(json.loads(existing.envelope_recipients) + list(recipients)))
        existing.envelope_recipients = json.dumps(merged)
    return Stored(existing.id, duplicate=True)


def _to_message(row: InboxEntry) -> InboxMessage:
    return InboxMessage(
        row.id,
        row.source,
        row.envelope_sender,
        tuple(json.loads(row.envelope_recipients)),
        row.raw,
        row.message_id,
        row.received_at,
        row.attempts,
    )


def claim_due(
    session: Session,
    now: datetime,
    lease: timedelta,
    limit: int = 20,
) -> list[InboxMessage]:
    query = select(InboxEntry).where(
        InboxEntry.state.in_((PENDING, FAILED)), InboxEntry.next_attempt_at <= now
    )
    return [_to_message(row) for row in claim(session, InboxEntry, query, now, lease, limit)]


def mark_done(session: Session, entry_id: int, now: datetime) -> None:
    session.execute(
        update(InboxEntry)
        .where(InboxEntry.id == entry_id)
        .values(state=DONE, processed_at=now, claimed_until=None, last_error=None)
    )


def mark_failed(
    session: Session, entry_id: int, now: datetime, error: str, retry_at: datetime
) -> None:
    session.execute(
        update(InboxEntry)
        .where(InboxEntry.id == entry_id)
        .values(
            state=FAILED,
            attempts=InboxEntry.attempts + 1,
            next_attempt_at=retry_at,
            claimed_until=None,
            last_error=error[:2000],
        )
    )


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(InboxEntry.state, func.count()).group_by(InboxEntry.state))
    return {str(state): int(count) for state, count in rows.all()}


def get(session: Session, entry_id: int) -> InboxMessage | None:
    row = session.get(InboxEntry, entry_id)
    return None if row is None else _to_message(row)
