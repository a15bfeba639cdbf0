"""Leader leases (IMAP watcher, scheduler): one holder at a time, taken over once expired."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import Lease


def database_time(session: Session, local: datetime) -> datetime:
    """The time leases are judged by: the database's own clock on PostgreSQL, where
    several hosts share the lease and their clocks may disagree (a host whose clock runs
    behind would otherwise think a lapsed lease still valid, or take one too early);
    `local` on SQLite, which one host at a time uses."""
    if session.get_bind().dialect.name != "postgresql":
        return local
    value: datetime = session.execute(select(func.now())).scalar_one()
    return value


def acquire(session: Session, name: str, holder: str, now: datetime, lease: timedelta) -> bool:
    """Take or renew lease `name` until now + lease; False while another holder's is valid.

    One statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE): PostgreSQL evaluates the
    condition on the locked, latest row, so two instances can never both succeed; SQLite
    (3.35+) runs the same statement under its single writer lock.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = insert(Lease).values(name=name, holder=holder, expires_at=now + lease)
    statement = values.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"holder": values.excluded.holder, "expires_at": values.excluded.expires_at},
        where=or_(Lease.holder == holder, Lease.expires_at <= now),
    ).returning(Lease.holder)
    return session.execute(statement).scalar_one_or_none() == holder


def release(session: Session, name: str, holder: str, now: datetime) -> None:
    """Give the lease up (on shutdown) so another instance takes over at once."""
    session.execute(
        update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=now)
    )


def holder_of(session: Session, name: str, now: datetime) -> str | None:
    """Who holds lease `name` now, or None when nobody does."""
    row = session.execute(select(Lease).where(Lease.name == name)).scalar_one_or_none()
    if row is None or row.expires_at <= now:
        return None
    return row.holder


def still_held(session: Session, name: str, holder: str, now: datetime) -> bool:
    """Whether `holder` holds lease `name` at `now`; the row stays locked (PostgreSQL) until
    the transaction ends, so nobody takes the lease over in the middle of its work."""
    row = session.execute(
        select(Lease.holder, Lease.expires_at).where(Lease.name == name).with_for_update()
    ).one_or_none()
    return row is not None and row.holder == holder and row.expires_at > now
