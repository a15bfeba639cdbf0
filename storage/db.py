"""Engine and sessions: SQLite in WAL mode with synchronous=FULL, or PostgreSQL via psycopg 3."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, String, Text, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_MS = 30_000
REPLACEMENT = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER, as a decoder writes for what it cannot


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; SQLite stores naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to storage; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def storable(text: str) -> str:
    """`text` as both backends store it: each NUL (U+0000) becomes U+FFFD.

    PostgreSQL's text types cannot hold NUL, SQLite's can; mail carries one now and then (a
    body, an encoded-word Subject `=?utf-8?q?a=00b?=`, a display name). Stored as it came,
    such a report fails on PostgreSQL at every retry and never becomes a case. The raw
    bytes (bytea) keep the NUL.
    """
    return text.replace("\x00", REPLACEMENT)


class StorableString(TypeDecorator[str]):
    """A VARCHAR that stores `storable(value)`: every text column is one, so no repository
    (nor a bulk UPDATE, nor a comparison's bound value) can hand PostgreSQL a NUL."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value)


class StorableText(StorableString):
    """TEXT, stored as `StorableString` stores VARCHAR."""

    impl = Text
    cache_ok = True


def make_engine(url: str, **options: Any) -> Engine:
    """An engine with the pragmas and transaction mode the gateway relies on."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **options)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a 250 that was answered survives a power cut (SPEC section 2).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later
        # writes can fail with SQLITE_BUSY that no busy timeout resolves.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class WriterGate:
    """SQLite has one writer. In-process writers queue here and wake the moment the lock
    is free, instead of sleeping in SQLite's busy handler (1 ms rising to 100 ms); mail
    waiting for its 250 goes first, so a busy pipeline cannot slow intake."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: int | None = None
        self._urgent_waiting = 0

    @contextmanager
    def hold(self, urgent: bool) -> Iterator[None]:
        me = threading.get_ident()
        if self._owner == me:  # the same thread again: it already holds SQLite's lock
            yield
            return
        with self._cond:
            self._urgent_waiting += urgent
            try:
                while self._owner is not None or (not urgent and self._urgent_waiting):
                    self._cond.wait()
            finally:
                self._urgent_waiting -= urgent
            self._owner = me
        try:
            yield
        finally:
            with self._cond:
                self._owner = None
                self._cond.notify_all()


class Database:
    """One engine and its session factory; one session per unit of work."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **options)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._gate = WriterGate() if self.engine.dialect.name == "sqlite" else None

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self, *, urgent: bool = False) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error.

        `urgent`: a client is waiting for this commit (SMTP 250); it goes first.
        """
        if self._gate is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        with self._gate.hold(urgent), self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
