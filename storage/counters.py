"""Gapless sequences: the counter row is locked until the transaction that takes a number ends."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Counter


def take_next(session: Session, name: str) -> int:
    """The next number of `name`; a rollback gives it back, so numbers have no gaps."""
    # UPDATE first: it takes the row lock on PostgreSQL (and the write lock on SQLite)
    # before anything is read, so two transactions can never see the same value.
    session.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + 1))
    return session.execute(select(Counter.value).where(Counter.name == name)).scalar_one()


def peek(session: Session, name: str) -> int:
    return session.execute(select(Counter.value).where(Counter.name == name)).scalar_one()
