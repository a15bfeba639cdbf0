"""Relayed list posts (Message-ID, sender, list, time; no bodies), kept 90 days."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from storage.address_columns import usable_address
from storage.models import RelayedPost

RETENTION = timedelta(days=90)
# Well below SQLite's and PostgreSQL's limits on bound parameters per statement.
_LOOKUP_CHUNK = 500


class Relayed(NamedTuple):
    message_id: str
    sender: str
    list: str
    at: datetime


def record_many(session: Session, rows: Sequence[tuple[str, str, str, datetime]]) -> None:
    """Add a batch; message ids are stored as given (the caller strips angle brackets).

    A sender that cannot be an address is left out: its row could never match anyone's
    no-contact hold, and PostgreSQL would refuse it and with it the whole batch.
    """
    kept = [
        {"message_id": message_id, "sender": sender, "list": list_address, "at": at}
        for message_id, sender, list_address, at in rows
        if usable_address(sender) is not None
    ]
    if kept:
        session.execute(insert(RelayedPost), kept)


def senders_of(session: Session, message_ids: Iterable[str]) -> dict[str, str]:
    """Message-ID -> sender, for those of `message_ids` that were relayed in the last 90 days."""
    wanted = list(dict.fromkeys(message_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(RelayedPost.message_id, RelayedPost.sender)
            .where(RelayedPost.message_id.in_(chunk))
            .order_by(RelayedPost.id)
        )
        found.update((row.message_id, row.sender) for row in rows)
    return found


def prune(session: Session, before: datetime) -> int:
    """Delete entries older than `before` (now minus RETENTION); returns how many."""
    result = session.execute(delete(RelayedPost).where(RelayedPost.at < before))
    return int(getattr(result, "rowcount", 0) or 0)
