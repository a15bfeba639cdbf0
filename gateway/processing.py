"""One stored message through parse, snapshot, handler and executor: shared by every path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import parsing, snapshot_builder
from gateway.config import Settings
from gateway.executor import Applied, Executor, MailIdentity, Source
from gateway.executor_commands import EffectRefused
from gateway.secret import Secrets
from handlers import moderation, staff_commands
from handlers.dispatch import Incoming, handle
from handlers.effects import Outcome
from handlers.imports import as_imported
from handlers.message import ParsedMessage
from handlers.snapshot import Snapshot
from rules.commands import CommandError
from rules.errors import GatewayError
from storage import inbox
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
    where = snapshot_builder.follow_merges(session, where)
    snapshot = snapshot_builder.build(session, settings, secrets, parsed, where, now, entry.raw)
    incoming = Incoming(parsed, where, snapshot, when, imported=imported)
    outcome = handle(incoming)
    if imported:
        outcome = as_imported(outcome)
    source = Source(
        entry.id, entry.raw, parsed, entry.envelope_recipients, _request(session, snapshot)
    )
    executor = Executor(identity(settings, secrets))
    try:
        applied = executor.apply(session, outcome, source, when)
    except EffectRefused as refusal:
        raise Refusal(incoming, outcome, refusal) from refusal
    return Processed(outcome, applied, parsed)


def _request(session: Session, snapshot: Snapshot) -> Source | None:
    """The mail a confirmation answers, as the executor files and attaches it."""
    pending = snapshot.confirmation
    if pending is None or pending.request is None or pending.request_inbox_id is None:
        return None
    entry = inbox.get(session, pending.request_inbox_id)
    if entry is None:
        return None
    return Source(entry.id, entry.raw, pending.request, entry.envelope_recipients)


class Refusal(GatewayError):
    """A command the database refused: the caller rolls back, then applies `answer`."""

    def __init__(self, incoming: Incoming, outcome: Outcome, refusal: EffectRefused) -> None:
        super().__init__(refusal.reason)
        self.incoming = incoming
        self.outcome = outcome
        self.refusal = refusal


def answer_refusal(
    session: Session,
    settings: Settings,
    secrets: Secrets,
    entry: InboxMessage,
    refused: Refusal,
    now: datetime,
) -> Processed:
    """In a fresh transaction: nothing of the commands, only the refusal and its result mail."""
    incoming = refused.incoming
    origin = refused.refusal.origin
    error = CommandError(origin.line, origin.text, refused.refusal.reason)
    number = refused.outcome.case
    case = incoming.snapshot.cases.get(number) if isinstance(number, int) else None
    if case is not None:
        outcome = staff_commands.refused(incoming.message, case, refused.outcome.rule, error)
    else:
        # Confirmed moderation commands name no case.
        outcome = moderation.refused_by_store(incoming.message, incoming.snapshot, error)
    source = Source(entry.id, entry.raw, incoming.message, entry.envelope_recipients)
    applied = Executor(identity(settings, secrets)).apply(session, outcome, source, now)
    return Processed(outcome, applied, incoming.message)
