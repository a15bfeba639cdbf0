"""Runs reminders, the daily digest and retention with APScheduler 3; one leader at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gateway import logs, retention_job
from gateway.config import Settings
from gateway.reminder_jobs import RETENTION_KEY, Jobs
from gateway.secret import Secrets
from rules.reminders import previous_daily
from storage import leases
from storage.db import Database

log = logs.get("scheduler")
LEASE_NAME = "scheduler"
TICK_SECONDS = 1.0  # SPEC section 2: a reminder fires within 5 s of its due time
RETENTION_AT = time(3, 17)  # in [reminders] timezone, read at each look
RETENTION_CHECK_SECONDS = 60.0


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
        *,
        tls_context: ssl.SSLContext | None = None,
        retention_check: float = RETENTION_CHECK_SECONDS,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.on_mail = on_mail
        self.tls_context = tls_context  # for the IMAP originals retention deletes
        self.retention_check = retention_check
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.jobs = Jobs(settings, database, secrets, lease=(LEASE_NAME, self.holder))
        self.leader = False
        self._aps: Any = None
        # The 1 s digest look and a leadership change must never both send it (issue 7).
        self._digest_lock = asyncio.Lock()
        self._retention_lock = asyncio.Lock()

    async def start(self) -> None:
        settings = self.settings()
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
        # Likewise retention: not a cron trigger, whose timezone would be fixed at start;
        # a run missed while no instance led is made up at the next look.
        self._aps.add_job(self._retention_if_due, IntervalTrigger(seconds=self.retention_check))
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
            now = leases.database_time(session, self.clock())
            leases.release(session, LEASE_NAME, self.holder, now)

    async def _renew(self) -> None:
        settings = self.settings()

        def acquire() -> bool:
            with self.database.transaction() as session:
                now = leases.database_time(session, self.clock())
                return leases.acquire(
                    session, LEASE_NAME, self.holder, now, settings.storage.leader_lease
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
            if leader and self._aps is not None:
                # At once, not at the next look: a run missed while down (SPEC 7a).
                self._aps.add_job(self._retention_if_due)

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
        """A digest due since the last one (or missed while no instance ran) is sent now;
        the check and the mark are one transaction (Jobs.digest_if_due)."""
        async with self._digest_lock:
            settings = self.settings()
            now = self.clock()
            due = previous_daily(now, settings.reminders.digest_at, settings.reminders.timezone)
            await self._guarded("digest", lambda: self.jobs.digest_if_due(due, now))

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

    async def _retention_if_due(self) -> None:
        """Daily at 03:17 in the current [reminders] timezone, and at once when this instance
        becomes leader after a missed run: retention, then held-post expiry and the relayed
        index's 90 days."""
        if not self.leader or self._retention_lock.locked():
            return
        async with self._retention_lock:
            try:
                settings = self.settings()
                now = self.clock()
                due = previous_daily(now, RETENTION_AT, settings.reminders.timezone)
                if await asyncio.to_thread(self.jobs.claim_daily, RETENTION_KEY, due, now):
                    await asyncio.to_thread(self._daily, settings, now)
            except Exception as error:
                logs.event(
                    log,
                    logging.ERROR,
                    "retention-failed",
                    error=type(error).__name__,
                    exc_info=error,
                )

    def _daily(self, settings: Settings, now: datetime) -> None:
        done = retention_job.apply(settings, self.database, now, self.tls_context)
        self.jobs.housekeeping(now)
        logs.event(
            log,
            logging.INFO,
            "retention",
            purged=len(done.purged),
            postponed=len(done.postponed),
            originals_deleted=done.originals_deleted,
            originals_pending=done.originals_pending,
        )
