"""The ban index a running server matches against, rebuilt within a second or two of any change.

Bans change through the CLI, staff mail and other instances, all by way of the database;
each change bumps `bans_version` (storage.bans), which this component polls every second.
The database read and the index build run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from gateway import logs
from rules.bans import Ban, BanIndex
from storage import bans
from storage.db import Database

log = logs.get("ban-cache")
POLL_INTERVAL = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BanCache:
    """Holds the current BanIndex; `index` is always a complete one (swapped, never edited)."""

    name = "ban-cache"

    def __init__(
        self,
        database: Database,
        *,
        interval: float = POLL_INTERVAL,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._database = database
        self._interval = interval
        self._clock = clock
        self._index: BanIndex | None = None
        self._version = -1
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def index(self) -> BanIndex:
        if self._index is None:
            # Matching against an empty index would let every banned sender through.
            raise RuntimeError("the ban cache is not started")
        return self._index

    @property
    def version(self) -> int:
        """The `bans_version` the current index was built from."""
        return self._version

    async def start(self) -> None:
        await self.refresh_now()
        self._task = asyncio.create_task(self._watch(), name="ban-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh_now(self) -> None:
        """Reload and rebuild at once (start-up, or after a change this process made)."""
        async with self._lock:
            version, active = await asyncio.to_thread(self._snapshot)
            self._index = await asyncio.to_thread(BanIndex, active)
            self._version = version
        logs.event(log, logging.INFO, "bans-loaded", version=version, bans=len(active))

    def _snapshot(self) -> tuple[int, list[Ban]]:
        with self._database.transaction() as session:
            return bans.snapshot(session, self._clock())

    def _read_version(self) -> int:
        with self._database.transaction() as session:
            return bans.version(session)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                if await asyncio.to_thread(self._read_version) != self._version:
                    await self.refresh_now()
            except Exception as error:
                # The last good index stays in force; the next poll tries again.
                logs.event(log, logging.WARNING, "bans-refresh-failed", error=type(error).__name__)
