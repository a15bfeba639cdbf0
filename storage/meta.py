"""Facts about the store itself, such as the fingerprint of the secret it was used with."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.models import Meta

# Any fixed 64-bit number (beside storage.migrate's); see hold().
META_LOCK_KEY = 0x636F6E6475637402


def hold(session: Session) -> None:
    """Serialise read-then-write of meta keys until this transaction ends.

    Instances starting at once on a fresh PostgreSQL database would otherwise both find
    no fingerprint and both insert it (one dies on the primary key), or both record one
    rotation. SQLite's BEGIN IMMEDIATE already runs one writer at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": META_LOCK_KEY})


def get(session: Session, key: str) -> str | None:
    row = session.get(Meta, key)
    return None if row is None else row.value


def put(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value
