"""The SMTP listener (SPEC sections 3 and 4): aiosmtpd on the daemon's own event loop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway import logs
from gateway.config import Settings
from gateway.intake_priority import IntakePriority
from gateway.list_gate import ListGate
from gateway.metrics import Metrics
from gateway.smtp_limits import (
    SHUTTING_DOWN_REPLY,
    TOO_MANY_CONNECTIONS_REPLY,
    GatewaySMTP,
    SmtpTlsError,
    call_limits,
    tls_context,
)
from gateway.smtp_transactions import Transactions, peer_text
from storage.db import Database

log = logs.get("smtp")

# stop() lets transactions in flight finish for this long, then closes what is left.
DRAIN_SECONDS = 10.0
_DRAIN_POLL_SECONDS = 0.05


class SmtpIngress:
    """A Component: listens on `[smtp] listen`; `port` is the bound port once started.

    Limits, TLS and the host name are read for each new connection, routing for each
    transaction, so a configuration reload applies without a restart (not `listen`).
    """

    name = "smtp"

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
        self._transactions = Transactions(
            settings_provider, database, list_gate, clock, on_stored, metrics, priority
        )
        self._connections: set[GatewaySMTP] = set()
        self._server: asyncio.Server | None = None
        self._tls_for: Settings | None = None
        self._tls: ssl.SSLContext | None = None
        self.port: int | None = None

    async def start(self) -> None:
        settings = self._settings()
        # A certificate that does not load stops start-up, not the first client.
        self._tls_context(settings, strict=True)
        # aiosmtpd logs every command line (addresses) at INFO and DATA lines at DEBUG.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        listen = settings.smtp.listen
        self._server = await loop.create_server(
            lambda: self._new_connection(loop),
            host=listen.host,
            port=listen.port,
            backlog=max(100, settings.smtp.max_connections),
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        logs.event(log, logging.INFO, "smtp-listening", host=listen.host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting; let transactions in flight finish (bounded); close the rest."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._transactions.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while loop.time() < deadline:
            for connection in list(self._connections):
                if not connection.in_transaction:
                    connection.shut_down()
            if not self._connections and not self._transactions.storing:
                break
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        for connection in list(self._connections):
            connection.shut_down()
        storing = set(self._transactions.storing)
        if storing:
            # A commit still running must end before the daemon disposes of the database.
            await asyncio.wait(storing, timeout=DRAIN_SECONDS)
        await server.wait_closed()
        logs.event(log, logging.INFO, "smtp-stopped")

    def _new_connection(self, loop: asyncio.AbstractEventLoop) -> GatewaySMTP:
        settings = self._settings()
        smtp = settings.smtp
        return GatewaySMTP(
            self._transactions,
            admit=self._admit,
            release=self._connections.discard,
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            hostname=smtp.hostname,
            ident="ESMTP",
            tls_context=self._tls_context(settings, strict=False),
            require_starttls=False,
            timeout=smtp.timeout.total_seconds(),
            command_call_limit=call_limits(smtp.max_recipients),
            loop=loop,
        )

    def _admit(self, connection: GatewaySMTP, peername: Any) -> str | None:
        peer = peer_text(peername)
        if self._transactions.draining:
            return SHUTTING_DOWN_REPLY
        limit = self._settings().smtp.max_connections
        if len(self._connections) >= limit:
            logs.event(log, logging.WARNING, "smtp-connection-refused", peer=peer, limit=limit)
            return TOO_MANY_CONNECTIONS_REPLY
        self._connections.add(connection)
        logs.event(log, logging.INFO, "smtp-connection", peer=peer)
        return None

    def _tls_context(self, settings: Settings, *, strict: bool) -> ssl.SSLContext | None:
        """The STARTTLS context, loaded again for each configuration read (start, SIGHUP),
        so that a certificate renewed in place applies after a reload."""
        certificate, key = settings.smtp.tls_certificate, settings.smtp.tls_key
        paths = None if certificate is None or key is None else (certificate, key)
        if settings is not self._tls_for:
            self._tls_for = settings
            try:
                self._tls = None if paths is None else tls_context(*paths)
            except SmtpTlsError as error:
                if strict:
                    raise
                # After a reload: keep serving (without STARTTLS) rather than refuse mail.
                self._tls = None
                logs.event(log, logging.ERROR, "smtp-tls-unusable", detail=str(error))
        return self._tls
