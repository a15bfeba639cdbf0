"""Fixtures shared by the suite: one storage suite, run on SQLite and the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from storage import migrate
from storage.db import Database
from tests.components import PG_ADMIN_URL, missing

RUN_ID = uuid.uuid4().hex[:10]


class PostgresServer:
    """Creates uniquely named databases for this run and drops them at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        self.template: str | None = None

    def url_for(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"cgw_{RUN_ID}_{len(self.created)}"
        clause = f" TEMPLATE {template}" if template else ""
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        self.created.append(name)
        return self.url_for(name)

    def migrated(self) -> str:
        """A fresh database at the head revision (copied from a migrated template)."""
        if self.template is None:
            url = self.create()
            database = Database(url)
            migrate.upgrade(database)
            database.dispose()
            self.template = make_url(url).database
        return self.create(template=self.template)

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in reversed(self.created):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_ADMIN_URL)
    try:
        with server.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        missing("PostgreSQL", str(error).splitlines()[0])
    yield server
    server.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def blank_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database on each backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create()


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database at the head revision on each backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
        database = Database(url)
        migrate.upgrade(database)
        database.dispose()
        return url
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.migrated()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()
