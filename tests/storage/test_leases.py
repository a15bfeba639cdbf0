"""Leader leases are judged by one clock: the database's, where several hosts share it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import leases
from storage.db import Database

LEASE = timedelta(seconds=30)
SKEWED = datetime(2000, 1, 1, tzinfo=UTC)  # a host whose clock is far behind


def test_the_lease_clock_is_the_databases_on_postgresql_and_the_hosts_on_sqlite(
    db: Database, backend: str
) -> None:
    with db.transaction() as session:
        judged = leases.database_time(session, SKEWED)
    if backend == "postgresql":
        assert abs(judged - datetime.now(UTC)) < timedelta(minutes=1)
    else:
        assert judged == SKEWED


def test_a_host_whose_clock_runs_ahead_cannot_take_over_a_valid_lease(
    db: Database, backend: str
) -> None:
    """Host b (its clock years behind) takes the lease; host a (two hours ahead) would
    see it as long lapsed by its own clock. By the database's clock it is still valid."""
    ahead = datetime.now(UTC) + timedelta(hours=2)
    with db.transaction() as session:
        assert leases.acquire(
            session, "scheduler", "b", leases.database_time(session, SKEWED), LEASE
        )
    with db.transaction() as session:
        took = leases.acquire(
            session, "scheduler", "a", leases.database_time(session, ahead), LEASE
        )
    # SQLite serves one host: its clocks cannot disagree, and a's own clock decides.
    assert took is (backend == "sqlite")
