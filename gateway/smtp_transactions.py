"""One SMTP transaction: route each RCPT, then commit conduct mail or hand a list post on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Session

from gateway import logs
from gateway.config import Settings
from gateway.inbox_writer import InboxWriter
from gateway.intake_priority import IntakePriority
from gateway.list_gate import IncomingEnvelope, ListGate
from gateway.metrics import Metrics
from gateway.smtp_limits import SHUTTING_DOWN_REPLY, TOO_MANY_RECIPIENTS_REPLY, Transaction
from rules.line_endings import normalise_line_endings
from rules.message_keys import message_id
from rules.routing import (
    RouteKind,
    RoutingTable,
    TransactionKind,
    rcpt_reply,
    route,
    transaction_kind,
)
from storage import inbox
from storage.db import Database

log = logs.get("smtp")

# No internal detail: the reply reaches whoever connects (SPEC section 4).
LOCAL_ERROR_REPLY = "451 4.3.0 Requested action aborted: local error in processing"


class Transactions:
    """aiosmtpd's handler: its hooks are called as hook(server, session, envelope, *args)."""

    def __init__(
        self,
        settings_provider: Callable[[], Settings],
        database: Database,
        list_gate: ListGate,
        clock: Callable[[], datetime],
        on_stored: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        priority: IntakePriority | None = None,
    ) -> None:
        self._settings = settings_provider
        self._metrics = metrics or Metrics(clock)
        # Told of every transaction, so that the pipeline gives way to intake.
        self._priority = priority or IntakePriority()
        self._database = database
        self._writer = InboxWriter(database, source="smtp")
        self._list_gate = list_gate
        self._clock = clock
        self._on_stored = on_stored
        self._table: tuple[Settings, RoutingTable] | None = None
        # Commits still running; stop() waits for them before the database closes.
        self.storing: set[asyncio.Task[inbox.Stored]] = set()
        self.draining = False

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Transaction,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # The gateway has no accounts, so aiosmtpd's AUTH (offered after STARTTLS) could
        # only ever fail; not offering it keeps clients from trying.
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Transaction,
        address: str,
        mail_options: list[str],
    ) -> str:
        self._priority.touch()
        if self.draining:
            return SHUTTING_DOWN_REPLY
        # Read per transaction: a configuration reload applies from the next MAIL on.
        settings = self._settings()
        envelope.table = self._routing_table(settings)
        envelope.max_recipients = settings.smtp.max_recipients
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        logs.event(
            log, logging.DEBUG, "smtp-mail-from", peer=peer_text(session.peer), sender=address
        )
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Transaction,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self._priority.touch()
        if envelope.table is None:  # aiosmtpd asks for MAIL first; kept for the type
            return "503 5.5.1 Error: need MAIL command"
        if len(envelope.routes) >= envelope.max_recipients:
            return TOO_MANY_RECIPIENTS_REPLY
        decided = route(envelope.table, address)
        reply = rcpt_reply(envelope.kind, decided)
        if reply is None and decided.kind is RouteKind.LIST:
            reply = await self._list_gate.check_envelope(_sender(envelope), decided)
        peer = peer_text(session.peer)
        code = "250" if reply is None else reply[:3]
        logs.event(log, logging.INFO, "smtp-route", peer=peer, rule=decided.rule, reply=code)
        logs.event(log, logging.DEBUG, "smtp-rcpt", peer=peer, recipient=address, rule=decided.rule)
        if reply is not None:
            return self._metrics.rcpt_refused(decided, reply)
        envelope.kind = envelope.kind or transaction_kind(decided)
        envelope.routes.append(decided)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Transaction) -> str:
        self._priority.touch()
        raw = normalise_line_endings(envelope.original_content or b"")
        try:
            if envelope.kind is TransactionKind.LIST:
                return await self._relay(session, envelope, raw)
            return await self._keep(envelope, raw)
        finally:
            self._priority.touch()

    async def handle_exception(self, error: Exception) -> str:
        # The type only: an exception's text can quote addresses or message content.
        logs.event(log, logging.ERROR, "smtp-error", error=type(error).__name__)
        return LOCAL_ERROR_REPLY

    async def _keep(self, envelope: Transaction, raw: bytes) -> str:
        """Conduct and postmaster mail: 250 only once its bytes are committed (SPEC section 2)."""
        recipients = [r.recipient for r in envelope.routes]
        try:
            stored = await self._store(raw, _sender(envelope) or None, recipients)
        except Exception:  # logged where it happened, in _store_now
            return self._metrics.kept(envelope.routes, LOCAL_ERROR_REPLY)
        logs.event(
            log,
            logging.INFO,
            "smtp-stored",
            inbox_id=stored.id,
            message_id=message_id(raw),
            duplicate=stored.duplicate,
        )
        self._on_stored()  # the pipeline looks now rather than at its next poll
        return self._metrics.kept(envelope.routes, f"250 2.0.0 Ok: queued as {stored.id}")

    async def _store(self, raw: bytes, sender: str | None, recipients: list[str]) -> inbox.Stored:
        now = self._clock()
        task = asyncio.ensure_future(
            asyncio.to_thread(self._store_now, raw, sender, recipients, now)
        )
        self.storing.add(task)
        task.add_done_callback(self._stored)
        # Shielded: a client that hangs up mid-commit cancels its handler, not the commit,
        # which stop() still waits for.
        return await asyncio.shield(task)

    def _store_now(
        self, raw: bytes, sender: str | None, recipients: list[str], now: datetime
    ) -> inbox.Stored:
        try:
            return self._writer.store(raw, sender, recipients, now)
        except Exception as error:
            logs.event(
                log,
                logging.ERROR,
                "smtp-store-failed",
                message_id=message_id(raw),
                error=type(error).__name__,
            )
            raise

    def _stored(self, task: asyncio.Task[inbox.Stored]) -> None:
        self.storing.discard(task)
        if not task.cancelled():
            task.exception()  # seen: logged in _store_now, answered in _keep

    async def _relay(self, session: Session, envelope: Transaction, raw: bytes) -> str:
        incoming = IncomingEnvelope(
            mail_from=_sender(envelope),
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(envelope.rcpt_options),
            peer=peer_text(session.peer),
            helo=session.host_name or "",
        )
        try:
            reply = await self._list_gate.deliver(incoming, tuple(envelope.routes), raw)
        except Exception as error:
            logs.event(
                log,
                logging.ERROR,
                "smtp-relay-failed",
                message_id=message_id(raw),
                error=type(error).__name__,
            )
            return self._metrics.list_reply(LOCAL_ERROR_REPLY)
        logs.event(
            log,
            logging.INFO,
            "smtp-relayed",
            message_id=message_id(raw),
            routes=len(envelope.routes),
            reply=reply[:3],
        )
        return reply

    def _routing_table(self, settings: Settings) -> RoutingTable:
        # Built once per settings object: the provider returns the same one until a reload.
        if self._table is None or self._table[0] is not settings:
            table = RoutingTable.build(
                conduct_address=settings.gateway.conduct_address,
                local_domains=settings.gateway.local_domains,
                lists=settings.relay.lists,
                list_domains=settings.relay.list_domains,
                postmaster=settings.gateway.postmaster,
            )
            self._table = (settings, table)
        return self._table[1]


def _sender(envelope: Transaction) -> str:
    """The reverse path, "" for the null sender (aiosmtpd gives `<>` for MAIL FROM:<>)."""
    address = envelope.mail_from
    return "" if address is None or address == "<>" else address


def peer_text(peer: Any) -> str:
    """`host:port` (`[v6]:port`) from a socket's peername."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)
