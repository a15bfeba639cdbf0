"""Runs reminders, the daily digest and retention with APScheduler 3; one leader at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gateway import logs
from gateway.config import Settings
from gateway.reminder_jobs import Jobs
from gateway.secret import Secrets
from rules.reminders import previous_daily
from storage import leases, purge
from storage.db import Database

log = logs.get("scheduler")
LEASE_NAME = "scheduler"
TICK_SECONDS = 1.0  # SPEC section 2: a reminder fires within 5 s of its due time
RETENTION_HOUR, RETENTION_MINUTE = 3, 17


class Scheduler:
    """A Component. Due times live in the gateway's own tables; APScheduler only says when
    to look (its own job store would drop jobs it cannot unpickle, and its default grace
    time of one second would skip what was due while the gateway was down)."""

    name = "scheduler"

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        secrets: Secrets,
        clock: Callable[[], datetime],
        on_mail: Callable[[], None] = lambda: None,
        purged: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.on_mail = on_mail
        self.purged = purged
        self.jobs = Jobs(settings, database, secrets)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.leader = False
        self._aps: Any = None

    async def start(self) -> None:
        settings = self.settings()
        zone = settings.reminders.timezone
        lease_seconds = settings.storage.leader_lease.total_seconds()
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._aps.add_job(self._renew, IntervalTrigger(seconds=max(lease_seconds / 3, 1)))
        self._aps.add_job(self._tick, IntervalTrigger(seconds=TICK_SECONDS))
        # Not a cron trigger fixed at start: `digest_at` and `timezone` are read at each look,
        # so a reload (SIGHUP) moves the digest without a restart.
        self._aps.add_job(self._digest_if_due, IntervalTrigger(seconds=TICK_SECONDS))
        self._aps.add_job(
            self._daily, CronTrigger(hour=RETENTION_HOUR, minute=RETENTION_MINUTE, timezone=zone)
        )
        await self._renew()
        self._aps.start()

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
        if self.leader:
            try:
                await asyncio.to_thread(self._release)
            except Exception as error:
                # The lease simply expires: another instance takes over after it.
                logs.event(log, logging.WARNING, "lease-release-failed", error=type(error).__name__)

    def _release(self) -> None:
        with self.database.transaction() as session:
            leases.release(session, LEASE_NAME, self.holder, self.clock())

    async def _renew(self) -> None:
        settings = self.settings()

        def acquire() -> bool:
            with self.database.transaction() as session:
                return leases.acquire(
                    session, LEASE_NAME, self.holder, self.clock(), settings.storage.leader_lease
                )

        try:
            leader = await asyncio.to_thread(acquire)
        except Exception as error:
            logs.event(
                log, logging.ERROR, "lease-failed", error=type(error).__name__, exc_info=error
            )
            leader = False
        if leader != self.leader:
            self.leader = leader
            logs.event(
                log,
                logging.INFO,
                "scheduler-leader" if leader else "scheduler-standby",
                holder=self.holder,
            )
            if leader:
                await self._catch_up_digest()

    async def _digest_if_due(self) -> None:
        if not self.leader:
            return
        try:
            await self._catch_up_digest()
        except Exception as error:
            logs.event(
                log, logging.ERROR, "digest-failed", error=type(error).__name__, exc_info=error
            )

    async def _catch_up_digest(self) -> None:
        """A digest due since the last one (or missed while no instance ran) is sent now."""
        settings = self.settings()
        now = self.clock()
        due = previous_daily(now, settings.reminders.digest_at, settings.reminders.timezone)
        if await asyncio.to_thread(self.jobs.digest_missed, due, now):
            await self._digest()

    async def _guarded(self, name: str, work: Callable[[], int]) -> None:
        if not self.leader:
            return
        try:
            sent = await asyncio.to_thread(work)
        except Exception as error:
            logs.event(
                log, logging.ERROR, f"{name}-failed", error=type(error).__name__, exc_info=error
            )
            return
        if sent:
            logs.event(log, logging.INFO, name, mails=sent)
            self.on_mail()

    async def _tick(self) -> None:
        await self._guarded("reminders", lambda: self.jobs.tick(self.clock()))

    async def _digest(self) -> None:
        await self._guarded("digest", lambda: self.jobs.digest(self.clock()))

    async def _daily(self) -> None:
        """Retention purge, then held-post expiry and the relayed index's 90 days."""
        if not self.leader:
            return
        try:
            now = self.clock()
            originals = await asyncio.to_thread(run_retention, self.database, now)
            await asyncio.to_thread(self.jobs.housekeeping, now)
        except Exception as error:
            logs.event(
                log, logging.ERROR, "retention-failed", error=type(error).__name__, exc_info=error
            )
            return
        if originals and self.purged is not None:
            await self.purged(originals)


def run_retention(database: Database, now: datetime) -> list[str]:
    """Purge every due case, one transaction each; the Message-IDs of their originals."""
    with database.transaction() as session:
        due = purge.due_cases(session, now)
    originals: list[str] = []
    for number in due:
        with database.transaction() as session:
            originals += purge.purge(session, number, now)
        logs.event(log, logging.INFO, "case-purged", case=number)
    return originals
