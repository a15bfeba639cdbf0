"""Batch inserts store what an ORM insert stores, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import DataError

from storage import bulk
from storage.bulk import insert_many, insert_returning, one_of
from storage.db import REPLACEMENT, Database
from storage.models import InboxEntry
from tests.conftest import PostgresServer

NOW = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
TABLE = cast(Table, InboxEntry.__table__)
VARYING = ("dedup_key", "message_id", "envelope_sender", "envelope_recipients", "raw")
CONSTANT = {
    "source": "imap",
    "state": "pending",
    "attempts": 0,
    "next_attempt_at": NOW,
    "received_at": NOW,
}


def _rows(db: Database) -> list[tuple[object, ...]]:
    with db.transaction() as session:
        entries = session.execute(select(InboxEntry).order_by(InboxEntry.id)).scalars()
        return [
            (
                e.dedup_key,
                e.message_id,
                e.envelope_sender,
                e.envelope_recipients,
                e.raw,
                e.source,
                e.state,
                e.attempts,
                e.next_attempt_at,
                e.received_at,
            )
            for e in entries
        ]


def test_a_batch_reads_back_as_the_orm_would_have_stored_it(db: Database) -> None:
    rows = [
        ("k1", "id\x00one@example.net", "rita@example.net", '["conduct@example.org"]', b"a\x00b"),
        ("k2", None, None, "[]", b""),
        ("k3", "three@example.net", None, '["x@example.org"]', b"\xff" * 3000),
    ]
    with db.transaction() as session:
        assert insert_many(session, TABLE, VARYING, rows, CONSTANT, on_conflict="") == 3
    bulk = _rows(db)
    with db.transaction() as session:
        session.query(InboxEntry).delete()
        for row in rows:
            session.add(InboxEntry(**dict(zip(VARYING, row, strict=True)), **CONSTANT))
    assert bulk == _rows(db)
    assert bulk[0][1] == f"id{REPLACEMENT}one@example.net"  # text columns never hold NUL
    assert bulk[0][4] == b"a\x00b"
    assert bulk[0][8] == NOW


def test_a_column_of_nothing_but_null_and_a_conflict_skipped(db: Database) -> None:
    rows = [("k1", None, None, "[]", b"1"), ("k2", None, None, "[]", b"2")]
    clause = "ON CONFLICT (dedup_key) DO NOTHING"
    with db.transaction() as session:
        assert insert_many(session, TABLE, VARYING, rows, CONSTANT, on_conflict=clause) == 2
        assert insert_many(session, TABLE, VARYING, rows[1:], CONSTANT, on_conflict=clause) == 0
    assert [row[1:3] + row[4:5] for row in _rows(db)] == [(None, None, b"1"), (None, None, b"2")]


@pytest.mark.postgres
def test_an_over_long_value_is_refused_not_cut_on_postgresql(postgres: PostgresServer) -> None:
    """Arrays are cast without the column's length: an explicit cast to VARCHAR(128)[]
    would cut the value silently, where a plain INSERT refuses it."""
    db = Database(postgres.migrated())
    try:
        too_long = ("k" * 129, None, None, "[]", b"")  # dedup_key is VARCHAR(128)
        with pytest.raises(DataError), db.transaction() as session:
            insert_many(session, TABLE, VARYING, [too_long], CONSTANT, on_conflict="")
        assert _rows(db) == []
    finally:
        db.dispose()


@pytest.mark.parametrize("per_statement", [1, 2, 1000], ids=["1-a-statement", "2", "all"])
def test_insert_returning_names_only_the_rows_it_inserted(
    db: Database, monkeypatch: pytest.MonkeyPatch, per_statement: int
) -> None:
    """On SQLite in as many statements as its parameter limit needs (made small here)."""
    monkeypatch.setattr(bulk, "SQLITE_PARAMETERS", per_statement * 10)  # 10 columns a row
    rows = [(f"k{n}", None, None, "[]", b"%d" % n) for n in range(5)]
    clause = "ON CONFLICT (dedup_key) DO NOTHING"
    with db.transaction() as session:
        insert_many(session, TABLE, VARYING, rows[1:3], CONSTANT, on_conflict=clause)
        returned = insert_returning(
            session,
            TABLE,
            VARYING,
            rows,
            CONSTANT,
            on_conflict=clause,
            returning=("dedup_key", "raw"),
        )
        assert (
            insert_returning(
                session, TABLE, VARYING, [], CONSTANT, on_conflict=clause, returning=("id",)
            )
            == []
        )
    assert sorted(returned) == [("k0", b"0"), ("k3", b"3"), ("k4", b"4")]
    assert sorted(row[0] for row in _rows(db)) == [f"k{n}" for n in range(5)]


def test_one_of_finds_the_same_rows_as_in_on_both_backends(db: Database) -> None:
    rows = [(f"k{n}", None, None, "[]", b"") for n in range(60)]  # more than psycopg caches
    with db.transaction() as session:
        insert_many(session, TABLE, VARYING, rows, CONSTANT, on_conflict="")
        wanted = [f"k{n}" for n in range(0, 120, 2)]
        found = session.execute(
            select(InboxEntry.dedup_key).where(one_of(session, InboxEntry.dedup_key, wanted))
        ).scalars()
        assert sorted(found) == sorted(f"k{n}" for n in range(0, 60, 2))
        assert (
            session.execute(
                select(InboxEntry.id).where(one_of(session, InboxEntry.dedup_key, []))
            ).all()
            == []
        )
