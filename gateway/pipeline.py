"""The inbox worker: parse, decide in handlers, apply the effects, all in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway import logs
from gateway.config import Settings
from gateway.intake_priority import IntakePriority
from gateway.processing import Refusal, answer_refusal, process
from gateway.secret import Secrets
from rules.retry import next_attempt
from storage import inbox
from storage.db import Database
from storage.inbox import InboxMessage

log = logs.get("pipeline")
CLAIM_LEASE = timedelta(minutes=5)
FIRST_RETRY = timedelta(seconds=30)
POLL_SECONDS = 1.0


class Pipeline:
    """A Component: drains the inbox; a failing message is quarantined, never lost."""

    name = "pipeline"

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        secrets: Secrets,
        clock: Callable[[], datetime],
        on_mail: Callable[[], None] = lambda: None,
        priority: IntakePriority | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.secrets = secrets
        self.clock = clock
        self.on_mail = on_mail
        self.priority = priority
        self.quarantined = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        """Something was stored: look at the inbox now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline")

    async def stop(self) -> None:
        self._stopping = True
        if self.priority is not None:
            self.priority.release()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                done = await asyncio.to_thread(self.process_batch)
            except Exception:
                logs.event(log, logging.ERROR, "pipeline-error", exc_info=True)
                done = 0
            if done:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    def process_batch(self, limit: int = 20) -> int:
        """Claim due inbox entries and process each; returns how many were claimed."""
        now = self.clock()
        with self.database.transaction() as session:
            claimed = inbox.claim_due(session, now, CLAIM_LEASE, limit)
        for entry in claimed:
            if self.priority is not None:
                self.priority.give_way()
            self.process_one(entry)
        return len(claimed)

    def process_one(self, entry: InboxMessage) -> None:
        settings = self.settings()
        try:
            mails = self._apply(settings, entry)
        except Exception as error:
            self._quarantine(entry, error)
            return
        if mails:
            self.on_mail()

    def _apply(self, settings: Settings, entry: InboxMessage) -> int:
        """Process `entry` and mark it done in one transaction; returns the mails owed."""
        now = self.clock()
        try:
            with self.database.transaction() as session:
                if not inbox.take(session, entry):
                    return self._skip(entry)
                done = process(session, settings, self.secrets, entry, now)
                inbox.mark_done(session, entry, now)
        except Refusal as refused:
            # The commands' transaction rolled back; answer the sender in a new one.
            with self.database.transaction() as session:
                if not inbox.take(session, entry):
                    return self._skip(entry)
                done = answer_refusal(session, settings, self.secrets, entry, refused, now)
                inbox.mark_done(session, entry, now)
        logs.event(
            log,
            logging.INFO,
            "processed",
            inbox_id=entry.id,
            message_id=entry.message_id,
            route=done.outcome.route,
            rule=done.outcome.rule,
            # A command files nothing new, yet names the case it acted on.
            case=done.applied.case or _existing(done.outcome.case),
            mails=len(done.applied.mails),
        )
        return len(done.applied.mails)

    def _skip(self, entry: InboxMessage) -> int:
        # Our claim ran out and another instance claimed the message again, or it is done
        # already: that is the normal end of a stalled worker's copy, not an error.
        logs.event(
            log,
            logging.DEBUG,
            "stale-claim-skipped",
            inbox_id=entry.id,
            message_id=entry.message_id,
        )
        return 0

    def _quarantine(self, entry: InboxMessage, error: Exception) -> None:
        """Keep the message, record why, retry with back-off; the others go on."""
        now = self.clock()
        retry_at = next_attempt(entry.attempts, FIRST_RETRY, now)
        fields = {"inbox_id": entry.id, "message_id": entry.message_id}
        reason = f"{type(error).__name__}: {error}"
        try:
            with self.database.transaction() as session:
                recorded = inbox.mark_failed(session, entry, now, reason, retry_at)
        except Exception:
            # Left claimed: retried once the claim runs out, so never lost; and the rest
            # of the batch is still processed.
            logs.event(
                log,
                logging.ERROR,
                "quarantine-failed",
                error=type(error).__name__,
                exc_info=True,
                **fields,
            )
            return
        if not recorded:
            # Done after all (a COMMIT whose answer was lost) or claimed again by another
            # instance: the row says what happened, and reopening it would process it twice.
            logs.event(
                log,
                logging.WARNING,
                "error-after-claim-ended",
                error=type(error).__name__,
                exc_info=error,
                **fields,
            )
            self.on_mail()  # if the commit did land, its mail is waiting
            return
        self.quarantined += 1
        logs.event(
            log,
            logging.ERROR,
            "quarantined",
            error=type(error).__name__,
            retry_at=retry_at.isoformat(timespec="seconds"),
            exc_info=error,
            **fields,
        )


def _existing(case: int | str | None) -> int | None:
    return case if isinstance(case, int) else None
