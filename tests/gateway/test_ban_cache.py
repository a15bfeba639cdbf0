"""The ban cache of a running server sees bans added or lifted elsewhere within 2 seconds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from gateway.ban_cache import BanCache
from rules.bans import parse_pattern
from storage import bans
from storage.db import Database

DEV = "dev@lists.example.org"
# SPEC section 9: 2 s; the poll allows a little slack for a loaded test machine.
WAIT = 2.5


async def banned_within(cache: BanCache, address: str, expected: bool) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        hit = cache.index.match(address, DEV, datetime.now(UTC)) is not None
        if hit is expected:
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_ban_added_and_lifted_through_another_connection_reaches_the_cache(
    database_url: str,
) -> None:
    async def scenario() -> None:
        server, cli = Database(database_url), Database(database_url)
        cache = BanCache(server)
        await cache.start()
        try:
            assert cache.index.match("troll@example.net", DEV, datetime.now(UTC)) is None
            with cli.transaction() as session:
                ban = bans.add(
                    session,
                    pattern=parse_pattern("troll@example.net"),
                    list_address=None,
                    reason=None,
                    created_by="cli",
                    now=datetime.now(UTC),
                )
            assert await banned_within(cache, "Troll+x@example.net", expected=True)
            with cli.transaction() as session:
                bans.lift(session, ban.id, "cli", datetime.now(UTC))
            assert await banned_within(cache, "troll@example.net", expected=False)
        finally:
            await cache.stop()
            server.dispose()
            cli.dispose()

    asyncio.run(scenario())


def test_the_index_is_refused_before_start(db: Database) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = BanCache(db).index


def test_refresh_now_loads_at_once_and_stop_ends_the_poll(db: Database) -> None:
    async def scenario() -> None:
        cache = BanCache(db, interval=3600)
        await cache.start()
        with db.transaction() as session:
            bans.add(
                session,
                pattern=parse_pattern("*@spam.example"),
                list_address=DEV,
                reason=None,
                created_by="cli",
                now=datetime.now(UTC),
            )
        await cache.refresh_now()
        assert cache.index.match("x@spam.example", DEV, datetime.now(UTC)) is not None
        assert cache.version == 1
        await cache.stop()
        await cache.stop()  # stopping twice is harmless

    asyncio.run(scenario())
