"""`import PATH`: past correspondence from an mbox or Maildir, filed into cases, sending nothing."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import mailbox
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from gateway import logs
from gateway.config import Settings
from gateway.processing import process
from gateway.secret import Secrets
from rules.envelope import recover
from rules.errors import GatewayError
from rules.line_endings import normalise_line_endings
from storage import inbox
from storage.db import Database

log = logs.get("import")


class MailboxError(GatewayError):
    """The path is neither an mbox file nor a Maildir."""


@dataclass
class ImportSummary:
    messages: int = 0
    duplicates: int = 0
    cases_opened: int = 0
    joined: int = 0
    unfiled: int = 0
    failed: int = 0


def open_mailbox(path: Path) -> mailbox.Mailbox[mailbox.Message]:
    """A Maildir (a directory with cur/ and new/) or an mbox file; both are read lazily."""
    if path.is_dir():
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise MailboxError(f"{path}: a directory, but not a Maildir (no cur/ or new/)")
        return mailbox.Maildir(path, factory=None, create=False)
    if path.is_file():
        with path.open("rb") as file:
            first = file.readline()
        # An mbox starts with a "From " line; anything else (one .eml) would import nothing.
        if first and not first.startswith(b"From "):
            raise MailboxError(f'{path}: not an mbox file (it does not start with a "From " line)')
        return mailbox.mbox(path, create=False)
    raise MailboxError(f"{path}: no such mbox file or Maildir")


def _sent_at(box: mailbox.Maildir, key: str) -> datetime:
    """The Date header, else the delivery time that starts a Maildir file name."""
    with box.get_file(key) as file:
        head = []
        for line in file:
            if not line.strip():
                break
            head.append(line)
    value = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(b"".join(head))[
        "Date"
    ]
    try:
        sent = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        prefix = key.split(".", 1)[0]
        return datetime.fromtimestamp(int(prefix) if prefix.isdigit() else 0, UTC)
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)


def _keys(box: mailbox.Mailbox[mailbox.Message]) -> Iterator[str]:
    """An mbox in its own (append) order; a Maildir, which has none (a directory listing),
    by date, so that a reply is filed after the report it answers and threads to it."""
    if not isinstance(box, mailbox.Maildir):
        yield from box.iterkeys()
        return
    yield from sorted(box.iterkeys(), key=lambda key: (_sent_at(box, key), key))


def messages(box: mailbox.Mailbox[mailbox.Message]) -> Iterator[bytes]:
    """One message's bytes at a time: the mailbox is never loaded whole (a Maildir's
    keys and dates are, to order it)."""
    for key in _keys(box):
        yield box.get_bytes(key)


def import_one(
    database: Database,
    settings: Settings,
    secrets: Secrets,
    raw: bytes,
    now: datetime,
    summary: ImportSummary,
) -> None:
    raw = normalise_line_endings(raw)
    envelope = recover(raw, settings.gateway.conduct_address)
    recipients = envelope.recipients or (settings.gateway.conduct_address,)
    with database.transaction() as session:
        stored = inbox.store(
            session,
            raw=raw,
            envelope_sender=envelope.sender,
            recipients=recipients,
            source="import",
            now=now,
        )
        if stored.duplicate:
            summary.duplicates += 1
            return
        entry = inbox.get(session, stored.id)
        assert entry is not None
        done = process(session, settings, secrets, entry, now, imported=True)
        inbox.mark_done(session, entry, now)
    if done.outcome.route == "report":
        summary.cases_opened += 1
    elif done.outcome.route == "case":
        summary.joined += 1
    else:
        summary.unfiled += 1


def run(
    database: Database,
    settings: Settings,
    secrets: Secrets,
    path: Path,
    clock: Callable[[], datetime],
    advance: Callable[[], None] = lambda: None,
) -> ImportSummary:
    """Each message in its own transaction: a failure rolls back only that message, and a
    second run stores nothing twice (the inbox's key) and so opens no case twice."""
    summary = ImportSummary()
    box = open_mailbox(path)
    try:
        for raw in messages(box):
            summary.messages += 1
            try:
                import_one(database, settings, secrets, raw, clock(), summary)
            except Exception as error:
                summary.failed += 1
                logs.event(
                    log,
                    logging.ERROR,
                    "import-failed",
                    index=summary.messages,
                    error=type(error).__name__,
                    exc_info=error,
                )
            advance()
    finally:
        box.close()
    return summary
