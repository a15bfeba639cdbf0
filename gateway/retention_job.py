"""Retention (SPEC section 7a) as the daily job and `cases purge` run it: dates, purge, IMAP."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import datetime

from gateway import imap_purge, logs
from gateway.config import Settings
from gateway.snapshot_builder import policy_from
from storage import purge, retention_dates
from storage.db import Database

log = logs.get("retention")


POSTPONED_REASON = "mail-pending"  # the case's outbox rows are not all sent or failed yet


@dataclass(frozen=True)
class Purged:
    purged: list[int]  # case numbers purged by this run
    postponed: dict[int, int]  # due, but case -> outbox rows it still owes: the next run


@dataclass(frozen=True)
class Retained:
    purged: list[int]  # case numbers purged by this run
    originals_deleted: int  # IMAP originals deleted by this run
    originals_pending: int  # still on the IMAP server: the next run tries again
    postponed: dict[int, int]  # due, but case -> outbox rows it still owes: the next run


def run_retention(settings: Settings, database: Database, now: datetime) -> list[int]:
    """`purge_due`, the numbers purged."""
    return purge_due(settings, database, now).purged


def purge_due(settings: Settings, database: Database, now: datetime) -> Purged:
    """Date the closed cases whose bans have all ended, then purge every due case, one
    transaction each. A case whose mail is still in the outbox is postponed: it stays
    due, and the run after its mail is sent (or failed for good) takes it. With IMAP on,
    the purged cases' originals' Message-IDs stay pending until `delete_originals`
    reaches the server."""
    with database.transaction() as session:
        for number in retention_dates.settle(session, policy_from(settings).retention, now):
            logs.event(log, logging.INFO, "retention-dated", case=number)
        due = purge.due_cases(session, now)
    purged: list[int] = []
    postponed: dict[int, int] = {}
    for number in due:
        with database.transaction() as session:
            owed = purge.purge(session, number, now, imap_originals=settings.imap.enabled)
        if owed:
            postponed[number] = owed
            logs.event(
                log,
                logging.INFO,
                "purge-postponed",
                case=number,
                reason=POSTPONED_REASON,
                mails=owed,
            )
        else:
            purged.append(number)
            logs.event(log, logging.INFO, "case-purged", case=number)
    return Purged(purged, postponed)


def delete_originals(
    settings: Settings, database: Database, tls_context: ssl.SSLContext | None = None
) -> tuple[int, int]:
    """Delete pending originals from processed_folder: (deleted, still pending).

    A server that cannot be reached leaves them pending, for the next run (daily, or
    `cases purge`); with IMAP turned off nothing is tried and nothing is kept pending.
    """
    with database.transaction() as session:
        pending = purge.originals_pending(session)
    if not pending:
        return 0, 0
    if not settings.imap.enabled:
        with database.transaction() as session:
            purge.originals_deleted(session, pending)
        return 0, 0
    deleted = imap_purge.delete_by_message_id(settings, pending, tls_context)
    if deleted is None:
        logs.event(log, logging.WARNING, "imap-purge-deferred", originals=len(pending))
        return 0, len(pending)
    with database.transaction() as session:
        purge.originals_deleted(session, pending)
    return deleted, 0


def apply(
    settings: Settings,
    database: Database,
    now: datetime,
    tls_context: ssl.SSLContext | None = None,
) -> Retained:
    """The whole of retention: what the 03:17 job and `cases purge` do."""
    done = purge_due(settings, database, now)
    deleted, pending = delete_originals(settings, database, tls_context)
    return Retained(done.purged, deleted, pending, done.postponed)
