"""One pass over the watched folder: commit each message to the inbox, only then move it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from gateway import imap_notice, logs
from gateway.config import ImapSettings, Settings
from gateway.imap_client import ImapConnection, ImapError, Listed
from rules.envelope import RecoveredEnvelope, recover
from rules.line_endings import normalise_line_endings
from rules.message_keys import dedup_key
from storage import imap_state, inbox
from storage.db import Database

log = logs.get("imap")
BATCH_MESSAGES = 50  # per FETCH, per transaction and per MOVE
BATCH_BYTES = 8 * 1024 * 1024
IN_INBOX = (imap_state.COMMITTED, imap_state.MOVED)


@dataclass(frozen=True)
class Pass:
    uidvalidity: int
    stored: int  # new inbox rows
    duplicates: int  # already in the inbox (a re-fetch after a crash, or sent twice)
    too_large: int


def mailbox_key(imap: ImapSettings) -> str:
    """What ImapSeen rows are kept under: the account and folder (UIDs are per folder)."""
    return f"{imap.username}@{imap.host}/{imap.folder}"[:512]


def ingest_folder(
    connection: ImapConnection,
    settings: Settings,
    database: Database,
    clock: Callable[[], datetime],
    on_stored: Callable[[], None],
    alive: Callable[[], None],
) -> Pass:
    """Everything waiting in `[imap] folder`, in UID order; returns what it did."""
    imap = settings.imap
    mailbox = mailbox_key(imap)
    uidvalidity = connection.select(imap.folder).uidvalidity
    listing = connection.listing()
    with database.transaction() as session:
        known = imap_state.states(session, mailbox, uidvalidity, [m.uid for m in listing])
    limit = settings.smtp.max_message_size
    # Committed before a crash or a failed move: only the move is missing.
    unmoved = [m.uid for m in listing if known.get(m.uid) in IN_INBOX]
    if unmoved:
        _move(connection, database, clock, mailbox, uidvalidity, unmoved, imap.processed_folder)
    big = [m for m in listing if known.get(m.uid) not in IN_INBOX and m.size > limit]
    for found in big:
        alive()
        _too_large(connection, settings, database, clock, mailbox, uidvalidity, found, known)
    wanted = [m for m in listing if known.get(m.uid) not in IN_INBOX and m.size <= limit]
    stored = duplicates = 0
    for batch in _batches(wanted):
        alive()
        raws = connection.fetch(batch)
        # Expunged by someone else meanwhile: not fetched, nothing to do.
        fetched = [(uid, raws[uid]) for uid in batch if uid in raws]
        new, again = _commit(database, settings, clock, mailbox, uidvalidity, fetched)
        stored, duplicates = stored + new, duplicates + again
        if fetched:
            on_stored()
            uids = [uid for uid, _ in fetched]
            _move(connection, database, clock, mailbox, uidvalidity, uids, imap.processed_folder)
    return Pass(uidvalidity, stored, duplicates, len(big))


def _batches(listing: list[Listed]) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 0
    for message in listing:
        if batch and (len(batch) >= BATCH_MESSAGES or size + message.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message.uid)
        size += message.size
    if batch:
        yield batch


def _commit(
    database: Database,
    settings: Settings,
    clock: Callable[[], datetime],
    mailbox: str,
    uidvalidity: int,
    found: list[tuple[int, bytes]],
) -> tuple[int, int]:
    """One transaction for a fetched batch: inbox rows and their ImapSeen rows together.

    Returns (new inbox rows, duplicates). Parsing happens before the transaction, so the
    SQLite write lock is held only for the inserts.
    """
    conduct = settings.gateway.conduct_address
    prepared = []
    for uid, fetched in found:
        raw = normalise_line_endings(fetched)
        prepared.append((uid, raw, _envelope(raw, conduct), dedup_key(raw)))
    new = duplicates = 0
    with database.transaction() as session:
        now = clock()
        for _, raw, envelope, _ in prepared:
            result = inbox.store(
                session,
                raw=raw,
                envelope_sender=envelope.sender,
                recipients=envelope.recipients or (conduct,),
                source="imap",
                now=now,
            )
            duplicates += result.duplicate
            new += not result.duplicate
        keys = [(uid, key) for uid, _, _, key in prepared]
        imap_state.record_committed(session, mailbox, uidvalidity, keys, now)
    return new, duplicates


def _envelope(raw: bytes, conduct_address: str) -> RecoveredEnvelope:
    try:
        return recover(raw, conduct_address)
    except Exception:  # unreadable headers: the mailbox is the conduct address anyway
        return RecoveredEnvelope(None, ())


def _move(
    connection: ImapConnection,
    database: Database,
    clock: Callable[[], datetime],
    mailbox: str,
    uidvalidity: int,
    uids: list[int],
    folder: str,
) -> None:
    connection.move(uids, folder)
    with database.transaction() as session:
        imap_state.mark_moved(session, mailbox, uidvalidity, uids, clock())


def _too_large(
    connection: ImapConnection,
    settings: Settings,
    database: Database,
    clock: Callable[[], datetime],
    mailbox: str,
    uidvalidity: int,
    found: Listed,
    known: dict[int, str],
) -> None:
    """Left in the folder and flagged; staff are told once per (mailbox, UIDVALIDITY, UID)."""
    if known.get(found.uid) == imap_state.TOO_LARGE:
        return
    headers = connection.header_fields(found.uid, imap_notice.HEADER_FIELDS)
    notice = imap_notice.TooLarge(settings.imap.folder, uidvalidity, found.uid, found.size, headers)
    with database.transaction() as session:
        now = clock()
        first = imap_state.claim_too_large(session, mailbox, uidvalidity, found.uid, now)
        mails = imap_notice.report(session, settings, notice, now) if first else 0
    if first:
        logs.event(
            log,
            logging.ERROR,
            "imap-too-large",
            uid=found.uid,
            uidvalidity=uidvalidity,
            size=found.size,
            limit=settings.smtp.max_message_size,
            staff_told=mails,
        )
    if imap_notice.KEYWORD in found.flags:
        return
    try:
        connection.add_keyword([found.uid], imap_notice.KEYWORD)
    except ImapError as error:
        # The state row already keeps staff from being told again.
        logs.event(log, logging.WARNING, "imap-flag-refused", uid=found.uid, detail=str(error))
