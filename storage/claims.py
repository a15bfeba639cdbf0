"""Row claiming shared by the inbox and the outbox: each due row goes to one worker at a time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, update
from sqlalchemy.orm import Session


def claim(
    session: Session, model: Any, query: Select[Any], now: datetime, lease: timedelta, limit: int
) -> list[Any]:
    """Rows of `query` that are due and unclaimed, now leased to the caller until now + lease.

    On PostgreSQL, FOR UPDATE SKIP LOCKED lets several instances claim side by side; a
    worker that dies leaves a lease that expires, after which another worker takes the row.
    """
    query = query.where(or_(model.claimed_until.is_(None), model.claimed_until <= now))
    query = query.order_by(model.next_attempt_at, model.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.execute(query).scalars())
    if rows:
        session.execute(
            update(model)
            .where(model.id.in_([row.id for row in rows]))
            .values(claimed_until=now + lease)
        )
    return rows
