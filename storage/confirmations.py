"""Pending moderation commands, found only by the hash of their single-use token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Confirmation


@dataclass(frozen=True)
class Pending:
    id: int
    sender: str
    commands: str
    inbox_id: int | None = None  # the request, kept in the inbox


def token_hash(token: str) -> str:
    # Only the hash is stored: a copy of the database cannot confirm anything.
    return hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()


def create(
    session: Session,
    *,
    token: str,
    sender: str,
    commands: str,
    inbox_id: int | None,
    now: datetime,
    expires: datetime,
) -> int:
    row = Confirmation(
        token_hash=token_hash(token),
        sender=sender,
        commands=commands,
        inbox_id=inbox_id,
        created_at=now,
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    return row.id


def find(session: Session, token: str, now: datetime) -> Pending | None:
    """Unused and unexpired; anything else is as if it never existed (SPEC section 3)."""
    row = session.execute(
        select(Confirmation).where(
            Confirmation.token_hash == token_hash(token),
            Confirmation.used_at.is_(None),
            Confirmation.expires_at > now,
        )
    ).scalar_one_or_none()
    return None if row is None else Pending(row.id, row.sender, row.commands, row.inbox_id)


def use(session: Session, confirmation_id: int, now: datetime) -> bool:
    """Mark used; False when it already was (a replayed confirmation runs nothing)."""
    row = session.get(Confirmation, confirmation_id, with_for_update=True)
    if row is None or row.used_at is not None:
        return False
    row.used_at = now
    return True
