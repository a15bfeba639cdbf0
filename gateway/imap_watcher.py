"""The IMAP watcher (SPEC sections 1, 2, 8; issue 6): a hosted conduct mailbox into the inbox.

Each message is committed to the inbox before it is moved to `processed_folder`, so a
crash in between only means it is seen again, and the inbox's idempotency (Message-ID
plus body SHA-256) keeps it one message; so does a UIDVALIDITY change. imapclient blocks,
so the IMAP session runs in its own thread; the event loop only keeps the leader lease
(one instance at a time watches the mailbox) and a watchdog on that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway import imap_ingest, logs
from gateway.config import ImapSettings, Settings
from gateway.imap_client import ImapConnection, ImapError, ImapLoginFailed, connect
from rules.retry import next_attempt
from storage import leases
from storage.db import Database

log = logs.get("imap")
LEASE_NAME = "imap"
# RFC 2177: a server may drop an IDLE client after 29 minutes; renew every 10 at most.
IDLE_RENEW_SECONDS = 600.0
# No byte from the server in IDLE this long: end IDLE and see whether it still answers
# (Dovecot's keep-alive comes every 120 s, so a healthy one never reaches this).
IDLE_SILENCE_SECONDS = 150.0
COMMAND_TIMEOUT_SECONDS = 60.0  # a server silent this long within a command is gone
FIRST_RETRY = timedelta(seconds=1)
RETRY_CAP = timedelta(minutes=5)


class ImapWatcher:
    """A Component: while this instance holds the "imap" lease, watch the folder."""

    name = "imap"

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        clock: Callable[[], datetime],
        on_stored: Callable[[], None] = lambda: None,
        *,
        tls_context: ssl.SSLContext | None = None,
        idle_renew: float = IDLE_RENEW_SECONDS,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
        idle_silence: float = IDLE_SILENCE_SECONDS,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.on_stored = on_stored
        self.tls_context = tls_context
        self.idle_renew = idle_renew
        self.command_timeout = command_timeout
        self.idle_silence = idle_silence
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.connected = False
        self.leader = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: ImapConnection | None = None
        self._second: ImapConnection | None = None  # a backlog pass's mover (imap_mover.py)
        self._failures = 0
        self._beat = time.monotonic()  # the worker thread's last sign of life

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._lead(), name="imap-lease")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._stop_worker()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._release)

    # --- leadership (event loop) -------------------------------------------------------

    async def _lead(self) -> None:
        held_until: datetime | None = None
        first = True
        while not self._stopping.is_set():
            lease = self.settings().storage.leader_lease
            asked = self.clock()
            try:
                held = await asyncio.to_thread(self._acquire, lease)
            except Exception:
                logs.event(log, logging.ERROR, "imap-lease-error", exc_info=True)
                held = held_until is not None and self.clock() < held_until
            else:
                # Measured from before the renewal on this host's clock: never later
                # than the lease's end in the database, whatever the clocks' skew.
                held_until = asked + lease if held else None
            if held != self.leader or first:
                self.leader, first = held, False
                # A follower stands by: it takes over once the leader's lease runs out.
                logs.event(log, logging.INFO, "imap-leader" if held else "imap-follower")
            if held and self._thread is None:
                self._start_worker()
            elif not held and self._thread is not None:
                await self._stop_worker()
            self._watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), lease.total_seconds() / 3)

    def _acquire(self, lease: timedelta) -> bool:
        with self.database.transaction() as session:
            now = leases.database_time(session, self.clock())
            return leases.acquire(session, LEASE_NAME, self.holder, now, lease)

    def _release(self) -> None:
        with self.database.transaction() as session:
            now = leases.database_time(session, self.clock())
            leases.release(session, LEASE_NAME, self.holder, now)

    def _watchdog(self) -> None:
        """A worker stuck past every socket timeout gets its connection shut under it."""
        limit = 5 * self.command_timeout
        if self._connection is not None and time.monotonic() - self._beat > limit:
            logs.event(log, logging.ERROR, "imap-watchdog", stuck_seconds=round(limit))
            self._beat = time.monotonic()
            self._abort()

    def _abort(self) -> None:
        """Fail whatever command the worker (or its mover) is blocked in, at once."""
        for connection in (self._connection, self._second):
            if connection is not None:
                connection.abort()

    def _start_worker(self) -> None:
        self._halt.clear()
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._work, name="imap-watcher", daemon=True)
        self._thread.start()

    async def _stop_worker(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._halt.set()
        await asyncio.to_thread(thread.join, 2)
        if thread.is_alive():
            self._abort()  # blocked in a command: fail it now
            # Never two workers: wait (at most a connect timeout) for this one to end.
            await asyncio.to_thread(thread.join)
        self._thread = None

    def _stored(self) -> None:
        """Called from the worker thread: wake the pipeline on the event loop."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                self._loop.call_soon_threadsafe(self.on_stored)

    # --- the IMAP session (worker thread) ----------------------------------------------

    def _work(self) -> None:
        self._failures = 0
        while not self._halt.is_set():
            settings = self.settings()
            failed = True
            try:
                self._connection = self._open(settings.imap)
                self._session(self._connection, settings)
                failed = False
            except ImapLoginFailed:
                self._failures += 1
                logs.event(
                    log,
                    logging.ERROR,
                    "imap-login-failed",
                    host=settings.imap.host,
                    attempt=self._failures,
                    detail="the server refused the username or the password in password_file",
                )
            except Exception as error:
                self._failures += 1
                logs.event(
                    log,
                    logging.WARNING,
                    "imap-error",
                    host=settings.imap.host,
                    error=type(error).__name__,
                    # Only our own and socket errors: a database error can quote mail.
                    detail=str(error)[:200] if isinstance(error, ImapError | OSError) else None,
                    attempt=self._failures,
                    exc_info=error,
                )
            finally:
                self._drop(failed)
            if self._halt.is_set():
                break
            delay = self._delay()
            logs.event(log, logging.INFO, "imap-reconnecting", in_seconds=round(delay, 1))
            self._halt.wait(delay)

    def _delay(self) -> float:
        now = self.clock()
        due = next_attempt(max(self._failures - 1, 0), FIRST_RETRY, now, RETRY_CAP)
        return (due - now).total_seconds()

    def _open(self, imap: ImapSettings) -> ImapConnection:
        assert imap.host is not None
        assert imap.username is not None
        assert imap.password_file is not None
        # Read at every attempt: a corrected file is picked up without a restart.
        password = imap.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        self._beat = time.monotonic()
        return connect(
            imap.host,
            imap.port,
            imap.security,
            imap.username,
            password,
            timeout=self.command_timeout,
            tls_context=self.tls_context,
        )

    def _open_second(self, imap: ImapSettings) -> ImapConnection:
        """The mover's connection, where the watchdog and `stop` can abort it too."""
        connection = self._open(imap)
        self._second = connection
        return connection

    def _drop(self, failed: bool) -> None:
        connection, self._connection = self._connection, None
        if self.connected:
            logs.event(log, logging.INFO, "imap-disconnected")
        self.connected = False
        if connection is not None:
            if failed:
                connection.abort()  # a broken server may never answer LOGOUT
            else:
                connection.close()

    def _session(self, connection: ImapConnection, settings: Settings) -> None:
        imap = settings.imap
        if connection.ensure_folder(imap.processed_folder):
            logs.event(log, logging.INFO, "imap-folder-created", folder=imap.processed_folder)
        idle = connection.has("IDLE")
        self.connected = True
        logs.event(
            log,
            logging.INFO,
            "imap-connected",
            host=imap.host,
            port=imap.port,
            security=imap.security,
            folder=imap.folder,
            idle="yes" if idle else "no",
        )
        announced = False
        while not self._halt.is_set():
            settings = self.settings()  # SIGHUP applies to the next pass
            self._beat = time.monotonic()
            try:
                done = imap_ingest.ingest_folder(
                    connection,
                    settings,
                    self.database,
                    self.clock,
                    self._stored,
                    self._alive,
                    functools.partial(self._open_second, settings.imap),
                )
            finally:
                self._second = None  # the mover closed it
            self._failures = 0  # a full pass: the next failure starts the back-off afresh
            if done.stored or done.duplicates:
                logs.event(
                    log,
                    logging.INFO,
                    "imap-ingested",
                    count=done.stored,
                    duplicates=done.duplicates,
                    uidvalidity=done.uidvalidity,
                )
            if self._halt.is_set():
                return
            if done.stored or done.duplicates or connection.new_mail_pending():
                # Mail may have come in during this pass (its EXISTS went to a FETCH or a
                # MOVE, which IDLE never sees): look again until a pass finds nothing.
                continue
            if idle:
                level = logging.INFO if not announced or done.stored else logging.DEBUG
                logs.event(log, level, "imap-idling", folder=imap.folder)
                announced = True
                connection.idle(self._halt, self.idle_renew, self._alive, self.idle_silence)
            else:
                poll = settings.imap.poll_interval.total_seconds()
                logs.event(log, logging.DEBUG, "imap-polling", in_seconds=poll)
                deadline = time.monotonic() + poll
                while not self._halt.wait(min(1.0, max(deadline - time.monotonic(), 0))):
                    if time.monotonic() >= deadline:
                        break
                    self._alive()  # waiting on purpose: not stuck

    def _alive(self) -> None:
        self._beat = time.monotonic()
