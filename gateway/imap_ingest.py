"""One pass over the watched folder: commit each message to the inbox, only then move it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DataError, IntegrityError

from gateway import imap_notice, logs
from gateway.config import ImapSettings, Settings
from gateway.imap_client import ImapConnection, ImapError, Listed
from gateway.imap_mover import Mover
from rules.envelope import RecoveredEnvelope, recover_from_header
from rules.message_keys import normalise_and_key, split_message
from storage import imap_state, inbox
from storage.db import Database

log = logs.get("imap")
BATCH_MESSAGES = 500  # per FETCH, per transaction and per MOVE
BATCH_BYTES = 8 * 1024 * 1024
IN_INBOX = (imap_state.COMMITTED, imap_state.MOVED)
# What the database says of a value it will not store (too long, NUL, not encodable), as
# opposed to its being unreachable: retrying the same value can never succeed.
REFUSED_VALUE = (DataError, IntegrityError, UnicodeEncodeError)


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
class Committed:
    """What a batch's commit put in the inbox: only these UIDs may be moved."""

    uids: list[int]
    new: int  # new inbox rows
    duplicates: int
    refused: tuple[int, ...] = ()  # first refused now: left in the folder, to be flagged


def _committed(
    prepared: list[tuple[int, inbox.Incoming]],
    stored: list[inbox.Stored],
    refused: tuple[int, ...] = (),
) -> Committed:
    duplicates = sum(result.duplicate for result in stored)
    return Committed([uid for uid, _ in prepared], len(stored) - duplicates, duplicates, refused)


@dataclass(frozen=True)
class _Target:
    """Where a pass writes: the database, and the ImapSeen key of the selected folder."""

    database: Database
    settings: Settings
    clock: Callable[[], datetime]
    mailbox: str
    uidvalidity: int

    def commit(self, found: list[tuple[int, bytes]]) -> Committed:
        """One transaction for a fetched batch: inbox rows and their ImapSeen rows together.

        Parsing and hashing happen before the transaction, so the SQLite write lock is
        held only for the two inserts. A batch the database refuses is committed one
        message at a time instead: a value nobody foresaw in one message must not hold up
        the folder, and newer mail behind it, forever.
        """
        conduct = self.settings.gateway.conduct_address
        prepared = [(uid, _incoming(raw, conduct)) for uid, raw in found]
        if len(prepared) > 1:
            with contextlib.suppress(*REFUSED_VALUE):
                return _committed(prepared, self._store(prepared))
        return self._one_by_one(prepared)

    def _store(self, prepared: list[tuple[int, inbox.Incoming]]) -> list[inbox.Stored]:
        keys = [(uid, message.dedup_key) for uid, message in prepared]
        with self.database.transaction() as session:
            now = self.clock()
            messages = [message for _, message in prepared]
            stored = inbox.store_many(session, messages, source="imap", now=now)
            imap_state.record_committed(session, self.mailbox, self.uidvalidity, keys, now)
        return stored

    def _one_by_one(self, prepared: list[tuple[int, inbox.Incoming]]) -> Committed:
        """Each message in its own transaction. One the database refuses is left in the
        folder, uncommitted and so never moved; it is recorded as refused, so that later
        passes leave it alone, and the operator (log) and staff (mail) are told once."""
        kept: list[tuple[int, inbox.Incoming]] = []
        stored: list[inbox.Stored] = []
        refused: list[int] = []
        for uid, message in prepared:
            try:
                stored += self._store([(uid, message)])
            except REFUSED_VALUE as error:
                if self._refused(uid, message, error):
                    refused.append(uid)
                continue
            kept.append((uid, message))
        return _committed(kept, stored, tuple(refused))

    def _refused(self, uid: int, message: inbox.Incoming, error: Exception) -> bool:
        """Record `uid` as refused and tell staff; False when it was recorded before."""
        settings = self.settings
        header, _ = split_message(message.raw)
        notice = imap_notice.Left(
            settings.imap.folder, self.uidvalidity, uid, len(message.raw), header, refused=True
        )
        told = self.leave(notice)
        if told is not None:
            logs.event(
                log,
                logging.ERROR,
                "imap-store-refused",
                uid=uid,
                uidvalidity=self.uidvalidity,
                message_id=message.message_id,
                error=type(error).__name__,
                staff_told=told,
            )
        return told is not None

    def leave(self, notice: imap_notice.Left) -> int | None:
        """Record a message left in the folder and tell staff in the same transaction:
        how many were told, or None when it was recorded before."""
        state = imap_state.REFUSED if notice.refused else imap_state.TOO_LARGE
        with self.database.transaction() as session:
            now = self.clock()
            first = imap_state.claim_left(
                session, self.mailbox, self.uidvalidity, notice.uid, state, now
            )
            return imap_notice.report(session, self.settings, notice, now) if first else None

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
    # Refused by the database before: left where it is (tell staff once, not each pass).
    new = [m for m in listing if known.get(m.uid) not in (*IN_INBOX, imap_state.REFUSED)]
    big = [m for m in new if m.size > limit]
    for found in big:
        alive()
        _too_large(connection, target, found, known)
    wanted = [m for m in new if m.size <= limit]
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
        committed = target.commit(fetched)
        stored, duplicates = stored + committed.new, duplicates + committed.duplicates
        if committed.refused:
            _flag(connection, list(committed.refused), imap_notice.REFUSED_KEYWORD)
        uids = committed.uids
        if not uids:
            continue
        on_stored()
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
    """A fetched message as the inbox takes it: line ends normalised, keyed, its envelope
    recovered from its headers (one pass over the bytes: `normalise_and_key`)."""
    keyed = normalise_and_key(raw)
    try:
        envelope = recover_from_header(keyed.header, conduct_address)
    except Exception:  # unreadable headers: the mailbox is the conduct address anyway
        envelope = RecoveredEnvelope(None, ())
    return inbox.Incoming(
        keyed.raw,
        envelope.sender,
        envelope.recipients or (conduct_address,),
        keyed.dedup_key,
        keyed.message_id,
    )


def _too_large(
    connection: ImapConnection, target: _Target, found: Listed, known: dict[int, str]
) -> None:
    """Left in the folder and flagged; staff are told once per (mailbox, UIDVALIDITY, UID)."""
    if known.get(found.uid) == imap_state.TOO_LARGE:
        return
    settings, uidvalidity = target.settings, target.uidvalidity
    headers = connection.header_fields(found.uid, imap_notice.HEADER_FIELDS)
    notice = imap_notice.Left(settings.imap.folder, uidvalidity, found.uid, found.size, headers)
    mails = target.leave(notice)
    if mails is not None:
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
    if imap_notice.KEYWORD not in found.flags:
        _flag(connection, [found.uid], imap_notice.KEYWORD)


def _flag(connection: ImapConnection, uids: list[int], keyword: str) -> None:
    """Mark messages left in the folder, for whoever reads the mailbox."""
    try:
        connection.add_keyword(uids, keyword)
    except ImapError as error:
        # The state rows already keep staff from being told again.
        for uid in uids:
            logs.event(log, logging.WARNING, "imap-flag-refused", uid=uid, detail=str(error))
