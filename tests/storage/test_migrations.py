"""Migrations apply to an empty database on each backend, downgrade to base, and re-apply."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from storage import migrate
from storage.db import Database
from storage.models import Base


def test_upgrade_creates_every_table_then_downgrade_removes_them(blank_url: str) -> None:
    database = Database(blank_url)
    try:
        migrate.upgrade(database)
        assert migrate.current_revision(database) == migrate.head_revision()
        tables = set(inspect(database.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate.downgrade(database, "base")
        assert migrate.current_revision(database) is None
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(database)
        assert migrate.current_revision(database) == migrate.head_revision()
    finally:
        database.dispose()


def test_the_schema_matches_the_models(blank_url: str) -> None:
    """Autogenerate finds nothing to add: models and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    database = Database(blank_url)
    try:
        migrate.upgrade(database)
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        database.dispose()


def test_counters_start_at_zero_so_the_first_case_is_one(db: Database) -> None:
    with db.engine.connect() as connection:
        rows = {
            str(k): int(v) for k, v in connection.execute(text("SELECT name, value FROM counters"))
        }
    assert rows == {"case": 0, "audit": 0}


def test_sqlite_runs_in_wal_mode_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


@pytest.mark.postgres
def test_instances_starting_at_once_upgrade_safely(postgres: object) -> None:
    from tests.conftest import PostgresServer

    assert isinstance(postgres, PostgresServer)
    url = postgres.create()
    errors: list[BaseException] = []

    def upgrade() -> None:
        database = Database(url)
        try:
            migrate.upgrade(database)
        except BaseException as error:  # collected and asserted below
            errors.append(error)
        finally:
            database.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = Database(url)
    assert migrate.current_revision(database) == migrate.head_revision()
    database.dispose()
