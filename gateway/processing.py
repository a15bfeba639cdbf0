"""One stored message through parse, snapshot, handler and executor: shared by every path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import parsing, snapshot_builder
from gateway.config import Settings
from gateway.executor import Applied, Executor, MailIdentity, Source
from gateway.secret import Secrets
from handlers.dispatch import Incoming, handle
from handlers.effects import Outcome
from handlers.imports import as_imported
from handlers.message import ParsedMessage
from storage.inbox import InboxMessage


@dataclass(frozen=True)
class Processed:
    outcome: Outcome
    applied: Applied
    parsed: ParsedMessage


def identity(settings: Settings, secrets: Secrets) -> MailIdentity:
    staff = tuple(p.address for p in snapshot_builder.team_from(settings).staff)
    return MailIdentity(settings.gateway.conduct_address, settings.gateway.case_tag, secrets, staff)


def process(
    session: Session,
    settings: Settings,
    secrets: Secrets,
    entry: InboxMessage,
    now: datetime,
    *,
    imported: bool = False,
) -> Processed:
    """Decide and apply in the caller's transaction; imported mail keeps its own date."""
    parsed = parsing.parse(entry.raw, entry.envelope_sender)
    when = (parsed.date or entry.received_at) if imported else now
    where = snapshot_builder.addressing(
        settings, entry.envelope_recipients, when if imported else entry.received_at
    )
    snapshot = snapshot_builder.build(session, settings, secrets, parsed, where, now)
    outcome = handle(Incoming(parsed, where, snapshot, when))
    if imported:
        outcome = as_imported(outcome)
    applied = Executor(identity(settings, secrets)).apply(
        session, outcome, Source(entry.id, entry.raw, parsed, entry.envelope_recipients), when
    )
    return Processed(outcome, applied, parsed)
