"""The inbox: raw received mail, committed before it is acknowledged, processed afterwards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, select, update
from sqlalchemy.orm import Session

from rules.message_keys import keys
from storage import bulk
from storage.address_columns import usable_address
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
    # The lease this copy was claimed under (None: a row read unclaimed, as the importer
    # does). The row is this copy's to act on only while it still carries this lease.
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class Incoming:
    """One received message, its envelope and its keys: made by `incoming`, before the
    transaction, so that hashing does not hold the write lock."""

    raw: bytes
    envelope_sender: str | None
    recipients: tuple[str, ...]
    dedup_key: str
    message_id: str | None


def incoming(
    raw: bytes, envelope_sender: str | None, recipients: list[str] | tuple[str, ...]
) -> Incoming:
    key, found_id = keys(raw)
    return Incoming(raw, envelope_sender, tuple(recipients), key, found_id)


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
    return store_many(
        session, [incoming(raw, envelope_sender, recipients)], source=source, now=now
    )[0]


def store_many(
    session: Session, messages: Sequence[Incoming], *, source: str, now: datetime
) -> list[Stored]:
    """`store` for each message, in order, in one statement: the IMAP watcher commits a
    whole fetched batch at once, SMTP intake a group of messages. Only duplicates cost
    another query."""
    if source not in SOURCES:
        raise ValueError(f"unknown inbox source {source!r}")
    first: dict[str, int] = {}  # dedup key -> the position of its first copy in `messages`
    for position, message in enumerate(messages):
        first.setdefault(message.dedup_key, position)
    new = _insert_new(session, [messages[at] for at in first.values()], source, now)
    ids = dict(new)
    again: dict[str, list[tuple[str, ...]]] = {}  # dedup key -> the duplicates' recipients
    for position, message in enumerate(messages):
        key = message.dedup_key
        if key not in new or first[key] != position:  # stored before, or a second copy
            again.setdefault(key, []).append(message.recipients)
    ids.update(_merge_duplicates(session, again))
    return [
        Stored(ids[key], duplicate=key not in new or first[key] != position)
        for position, key in enumerate(message.dedup_key for message in messages)
    ]


_VARYING = ("dedup_key", "message_id", "envelope_sender", "envelope_recipients", "raw")


def _values(message: Incoming) -> tuple[Any, ...]:
    return (
        message.dedup_key,
        # A NUL is stored as U+FFFD, as in every text column (storage/db.py `storable`);
        # the dedup key is still hashed from the id as written.
        message.message_id,
        # The raw message, Return-Path and all, is kept whole: only the column goes empty.
        usable_address(message.envelope_sender),
        json.dumps(list(message.recipients)),
        message.raw,
    )


def _insert_new(
    session: Session, candidates: list[Incoming], source: str, now: datetime
) -> dict[str, int]:
    """dedup key -> id of each of `candidates` (one per key) that was not stored yet and
    is inserted now; a key already stored is left to the caller as a duplicate."""
    if not candidates:
        return {}
    table = cast(Table, InboxEntry.__table__)
    constant = {
        "source": source,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }
    # RETURNING names exactly the rows this statement inserted, whatever another instance
    # stores at the same moment (PostgreSQL; SQLite holds its write lock anyway).
    returned = bulk.insert_returning(
        session,
        table,
        _VARYING,
        [_values(message) for message in candidates],
        constant,
        on_conflict="ON CONFLICT (dedup_key) DO NOTHING",
        returning=("dedup_key", "id"),
    )
    return {str(key): int(new_id) for key, new_id in returned}


def _merge_duplicates(session: Session, again: dict[str, list[tuple[str, ...]]]) -> dict[str, int]:
    """The id behind each duplicate key; a row still pending gains the duplicates' recipients.

    The same message to several conduct addresses, delivered separately, is still processed
    once, routed by the most specific address (SPEC section 2).
    """
    if not again:
        return {}
    rows = session.execute(
        select(InboxEntry)
        .where(bulk.one_of(session, InboxEntry.dedup_key, list(again)))
        .with_for_update()
    ).scalars()
    found: dict[str, int] = {}
    for existing in rows:
        found[existing.dedup_key] = existing.id
        if existing.state != PENDING:
            continue
        merged = json.loads(existing.envelope_recipients)
        for recipients in again[existing.dedup_key]:
            merged = list(dict.fromkeys(merged + list(recipients)))
        existing.envelope_recipients = json.dumps(merged)
    return found


def _to_message(row: InboxEntry, claimed_until: datetime | None) -> InboxMessage:
    return InboxMessage(
        row.id,
        row.source,
        row.envelope_sender,
        tuple(json.loads(row.envelope_recipients)),
        row.raw,
        row.message_id,
        row.received_at,
        row.attempts,
        claimed_until,
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
    rows = claim(session, InboxEntry, query, now, lease, limit)
    return [_to_message(row, now + lease) for row in rows]


def _still_ours(entry: InboxMessage) -> ColumnElement[bool]:
    """`entry`'s row while it is not done and still carries the lease `entry` was claimed
    under. A claim is only a time: once it runs out (a stalled worker) another instance
    claims the row again with a later one, and a COMMIT whose answer was lost leaves the
    row done; either way this copy is stale and acting on it would process the message
    twice (SPEC section 2)."""
    return and_(
        InboxEntry.id == entry.id,
        InboxEntry.state != DONE,
        InboxEntry.claimed_until == entry.claimed_until,  # IS NULL when unclaimed
    )


def take(session: Session, entry: InboxMessage) -> bool:
    """Lock `entry`'s row for this transaction; True while it is still this copy's to
    process. On PostgreSQL FOR UPDATE makes another instance's claim wait for (or, with
    SKIP LOCKED, pass over) this transaction; SQLite's BEGIN IMMEDIATE already holds the
    only write lock."""
    query = select(InboxEntry.id).where(_still_ours(entry)).with_for_update()
    return session.execute(query).first() is not None


def mark_done(session: Session, entry: InboxMessage, now: datetime) -> bool:
    """Done, unless the row is done already or claimed again since; returns whether it was."""
    changed = session.execute(
        update(InboxEntry)
        .where(_still_ours(entry))
        .values(state=DONE, processed_at=now, claimed_until=None, last_error=None)
        .returning(InboxEntry.id)
    )
    return changed.first() is not None


def mark_failed(
    session: Session, entry: InboxMessage, now: datetime, error: str, retry_at: datetime
) -> bool:
    """Quarantined for a retry at `retry_at`, unless the row is done (a commit whose answer
    was lost) or claimed again since; returns whether it was."""
    changed = session.execute(
        update(InboxEntry)
        .where(_still_ours(entry))
        .values(
            state=FAILED,
            attempts=InboxEntry.attempts + 1,
            next_attempt_at=retry_at,
            claimed_until=None,
            # An error can quote a header, NUL and all: stored as U+FFFD, as in any text.
            last_error=error[:2000],
        )
        .returning(InboxEntry.id)
    )
    return changed.first() is not None


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(InboxEntry.state, func.count()).group_by(InboxEntry.state))
    return {str(state): int(count) for state, count in rows.all()}


def get(session: Session, entry_id: int) -> InboxMessage | None:
    row = session.get(InboxEntry, entry_id)
    return None if row is None else _to_message(row, row.claimed_until)
