"""One pass over the watched folder: commit each message to the inbox, only then move it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from gateway import imap_notice, logs
from gateway.config import ImapSettings, Settings
from gateway.imap_client import ImapConnection, ImapError, Listed
from gateway.imap_mover import Mover
from rules.envelope import RecoveredEnvelope, recover
from rules.line_endings import normalise_line_endings
from storage import imap_state, inbox
from storage.db import Database

log = logs.get("imap")
BATCH_MESSAGES = 500  # per FETCH, per transaction and per MOVE
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


@dataclass(frozen=True)
class _Target:
    """Where a pass writes: the database, and the ImapSeen key of the selected folder."""

    database: Database
    settings: Settings
    clock: Callable[[], datetime]
    mailbox: str
    uidvalidity: int

    def commit(self, found: list[tuple[int, bytes]]) -> tuple[int, int]:
        """One transaction for a fetched batch: inbox rows and their ImapSeen rows together.

        Returns (new inbox rows, duplicates). Parsing and hashing happen before the
        transaction, so the SQLite write lock is held only for the two inserts.
        """
        conduct = self.settings.gateway.conduct_address
        prepared = [_incoming(normalise_line_endings(raw), conduct) for _, raw in found]
        keys = [(uid, message.dedup_key) for (uid, _), message in zip(found, prepared, strict=True)]
        with self.database.transaction() as session:
            now = self.clock()
            stored = inbox.store_many(session, prepared, source="imap", now=now)
            imap_state.record_committed(session, self.mailbox, self.uidvalidity, keys, now)
        duplicates = sum(result.duplicate for result in stored)
        return len(stored) - duplicates, duplicates

    def mark_moved(self, uids: list[int]) -> None:
        with self.database.transaction() as session:
            imap_state.mark_moved(session, self.mailbox, self.uidvalidity, uids, self.clock())


def ingest_folder(
    connection: ImapConnection,
    settings: Settings,
    database: Database,
    clock: Callable[[], datetime],
    on_stored: Callable[[], None],
    alive: Callable[[], None],
    second: Callable[[], ImapConnection] | None = None,
) -> Pass:
    """Everything waiting in `[imap] folder`, in UID order; returns what it did.

    `second` opens another logged-in connection: a pass of several batches moves them on
    it while this one fetches (gateway/imap_mover.py).
    """
    imap = settings.imap
    uidvalidity = connection.select(imap.folder).uidvalidity
    target = _Target(database, settings, clock, mailbox_key(imap), uidvalidity)
    limit = settings.smtp.max_message_size
    listing = connection.listing(min(BATCH_BYTES // BATCH_MESSAGES, limit))
    with database.transaction() as session:
        known = imap_state.states(session, target.mailbox, uidvalidity, [m.uid for m in listing])
    # Committed before a crash or a failed move: only the move is missing.
    unmoved = [m.uid for m in listing if known.get(m.uid) in IN_INBOX]
    if unmoved:
        connection.move(unmoved, imap.processed_folder)
        target.mark_moved(unmoved)
    big = [m for m in listing if known.get(m.uid) not in IN_INBOX and m.size > limit]
    for found in big:
        alive()
        _too_large(connection, target, found, known)
    wanted = [m for m in listing if known.get(m.uid) not in IN_INBOX and m.size <= limit]
    batches = list(_batches(wanted))
    mover = None
    if second is not None and len(batches) > 1:
        mover = Mover(second, imap.folder, uidvalidity, imap.processed_folder, alive)
    try:
        stored, duplicates = _take_in(connection, target, batches, on_stored, alive, mover)
    except BaseException:
        if mover is not None:
            _finish(mover, target, failing=True)
        raise
    if mover is not None:
        _finish(mover, target, failing=False)
    return Pass(uidvalidity, stored, duplicates, len(big))


def _take_in(
    connection: ImapConnection,
    target: _Target,
    batches: list[list[int]],
    on_stored: Callable[[], None],
    alive: Callable[[], None],
    mover: Mover | None,
) -> tuple[int, int]:
    """Fetch, commit, then move (here or by `mover`), batch by batch: (new inbox rows,
    duplicates)."""
    stored = duplicates = 0
    for batch in batches:
        alive()
        raws = connection.fetch(batch)
        # Expunged by someone else meanwhile: not fetched, nothing to do.
        fetched = [(uid, raws[uid]) for uid in batch if uid in raws]
        if not fetched:
            continue
        new, again = target.commit(fetched)
        stored, duplicates = stored + new, duplicates + again
        on_stored()
        uids = [uid for uid, _ in fetched]
        if mover is not None and mover.ready():
            mover.put(uids)
        else:
            connection.move(uids, target.settings.imap.processed_folder)
            target.mark_moved(uids)
    return stored, duplicates


def _finish(mover: Mover, target: _Target, *, failing: bool) -> None:
    """Wait for the mover and record what it moved. When this thread failed, what the
    mover could not move is committed and the next pass moves it, and the error worth
    reporting is this thread's: the mover's own is then left out."""
    error: Exception | None = None
    try:
        mover.finish()
    except Exception as raised:
        error = raised
    if mover.moved:
        try:
            target.mark_moved(mover.moved)
        except Exception:
            if not failing:
                raise
    if error is not None and not failing:
        raise error


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


def _incoming(raw: bytes, conduct_address: str) -> inbox.Incoming:
    try:
        envelope = recover(raw, conduct_address)
    except Exception:  # unreadable headers: the mailbox is the conduct address anyway
        envelope = RecoveredEnvelope(None, ())
    return inbox.incoming(raw, envelope.sender, envelope.recipients or (conduct_address,))


def _too_large(
    connection: ImapConnection, target: _Target, found: Listed, known: dict[int, str]
) -> None:
    """Left in the folder and flagged; staff are told once per (mailbox, UIDVALIDITY, UID)."""
    if known.get(found.uid) == imap_state.TOO_LARGE:
        return
    settings, uidvalidity = target.settings, target.uidvalidity
    headers = connection.header_fields(found.uid, imap_notice.HEADER_FIELDS)
    notice = imap_notice.TooLarge(settings.imap.folder, uidvalidity, found.uid, found.size, headers)
    with target.database.transaction() as session:
        now = target.clock()
        first = imap_state.claim_too_large(session, target.mailbox, uidvalidity, found.uid, now)
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
