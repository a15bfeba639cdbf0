"""`serve`: prepares storage, starts every configured component, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime
from typing import Protocol

from gateway import logs, sd_notify, secret
from gateway.config import Settings
from gateway.reload import Reloader
from gateway.settings_holder import SettingsHolder
from storage import migrate
from storage.db import Database

log = logs.get("daemon")


class Component(Protocol):
    """Something `serve` runs: started in order, stopped in reverse order."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def run(settings: Settings) -> None:
    # Everything the gateway writes (database, secret, outgoing Maildir) holds reports.
    os.umask(0o077)
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


def prepare(settings: Settings) -> tuple[Database, secret.Secrets]:
    """Secret, schema and the secret's fingerprint: everything before any listener opens."""
    found = secret.load(settings, create=True)
    database = Database(settings.storage.url)
    migrate.upgrade(database)
    with database.transaction() as session:
        secret.check_fingerprint(session, found, datetime.now(UTC))
    if not settings.require_dkim:
        logs.event(
            log,
            logging.WARNING,
            "dkim-not-required",
            detail="[auth] require_dkim = no: staff commands are trusted on the "
            "signed address alone",
        )
    return database, found


def _clock() -> datetime:
    return datetime.now(UTC)


def components(
    holder: SettingsHolder, database: Database, found: secret.Secrets
) -> list[Component]:
    """What this configuration runs, in start order (they stop in reverse)."""
    from gateway.ban_cache import BanCache
    from gateway.imap_watcher import ImapWatcher
    from gateway.intake_priority import IntakePriority
    from gateway.list_service import ListService
    from gateway.metrics import Metrics, staff_signed
    from gateway.metrics_server import MetricsServer
    from gateway.pipeline import Pipeline
    from gateway.policy_server import PolicyServer
    from gateway.scheduler import Scheduler
    from gateway.sender import OutboxSender
    from gateway.smtp_ingress import SmtpIngress

    current = holder.current
    settings = current()

    def mail_owed() -> None:
        sender.notify()  # bound late: the sender is made below, before anything runs

    metrics = Metrics(_clock)
    metrics.know_commanders(lambda signed: staff_signed(signed, _commanders(current()), found.all))
    bans = BanCache(database, clock=_clock)
    lists = ListService(current, database, bans, found, _clock, on_mail=mail_owed, metrics=metrics)
    sender = OutboxSender(
        current,
        database,
        _clock,
        upstream=lists.deliver_upstream,
        upstream_failed=lists.upstream_failed,
    )
    priority = IntakePriority()  # the pipeline gives way while SMTP clients are served
    pipeline = Pipeline(current, database, found, _clock, on_mail=sender.notify, priority=priority)
    ingress = SmtpIngress(
        current, database, lists, _clock, pipeline.notify, metrics=metrics, priority=priority
    )
    scheduler = Scheduler(current, database, found, _clock, on_mail=sender.notify)
    running: list[Component] = [bans, lists, sender, pipeline, scheduler, ingress]
    watcher = None
    if settings.imap.enabled:
        watcher = ImapWatcher(current, database, _clock, on_stored=pipeline.notify)
        running.append(watcher)
    if settings.policy_listen is not None:
        running.append(
            PolicyServer(
                current,
                lambda address, list_address, now: metrics.envelope_hit(
                    bans.index.match(address, list_address, now)
                ),
                _clock,
                database=database,
            )
        )
    if settings.metrics_listen is not None:  # last: every figure it shows exists by then
        metrics.follow(
            outbox_failed=lambda: sender.failed_total,
            quarantined=lambda: pipeline.quarantined,
            scheduler_leader=lambda: scheduler.leader,
            imap_connected=lambda: watcher is not None and watcher.connected,
        )
        running.append(MetricsServer(current, database, metrics))
    return running


def _commanders(settings: Settings) -> list[str]:
    """Who commands a case through their signed address: staff and the director."""
    gateway = settings.gateway
    return [person.address for person in (*gateway.staff, gateway.executive_director)]


async def serve(settings: Settings) -> None:
    # systemd arms the watchdog at READY=1; pings before it are ignored, never harmful.
    watchdog = sd_notify.start_watchdog()
    sd_notify.notify("STATUS=preparing storage")
    database, found = await asyncio.to_thread(prepare, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    holder = SettingsHolder(settings)
    # SIGHUP re-reads the file (SPEC section 10); the default action would end the process.
    loop.add_signal_handler(signal.SIGHUP, Reloader(holder).request)
    running: list[Component] = []
    try:
        for component in components(holder, database, found):
            await component.start()
            running.append(component)
            logs.event(log, logging.INFO, "component-started", component=component.name)
        logs.event(
            log,
            logging.INFO,
            "ready",
            revision=migrate.current_revision(database),
            components=",".join(c.name for c in running) or "none",
        )
        # Every listener accepts by now (SPEC section 10): systemd may start what needs us.
        sd_notify.notify("READY=1\nSTATUS=serving")
        await stop.wait()
        logs.event(log, logging.INFO, "draining")
        sd_notify.notify("STOPPING=1\nSTATUS=draining")
    finally:
        for component in reversed(running):
            await component.stop()
            logs.event(log, logging.INFO, "component-stopped", component=component.name)
        database.dispose()
        if watchdog is not None:
            watchdog.cancel()
    logs.event(log, logging.INFO, "stopped")
