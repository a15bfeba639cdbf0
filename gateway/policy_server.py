"""The Postfix policy service (`[policy] listen`): envelope-sender bans for `check_policy_service`.

Postfix keeps a connection open and sends one request after another on it
(SMTPD_POLICY_README). Whatever arrives, the server answers DUNNO or closes the
connection; it never raises out of a connection. Postfix treats a lost connection as
a temporary failure (`smtpd_policy_service_default_action`, 451 4.3.5), so closing is
kept for input that cannot come from Postfix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from gateway import logs
from gateway.config import Settings
from rules.errors import GatewayError
from rules.policy import (
    DUNNO,
    BanLookup,
    PolicyDecision,
    PolicyRequest,
    decide,
    parse_request,
)
from rules.routing import RoutingTable
from storage import audit
from storage.db import Database

log = logs.get("policy")

# Postfix 3.7 sends about 40 attributes, each well under 1 KiB (ccert_* and sasl_*
# values are the longest).
MAX_LINE = 8 * 1024
MAX_ATTRIBUTES = 100
# Bytes skipped in one request (over-long lines, surplus attributes) before the peer
# is taken for something other than Postfix and the connection closed.
MAX_SKIPPED = 1024 * 1024
# Longer than Postfix's smtpd_policy_service_max_idle (300s), so that Postfix, which
# reconnects cleanly, is the side that closes an idle connection.
IDLE_TIMEOUT = 330.0


class PolicyServerError(GatewayError):
    """The policy server cannot start as configured."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"policy server: {problem}")


class _Unusable(Exception):
    """The connection cannot go on; the reason is a stable id for the log."""


@dataclass(frozen=True)
class _RawRequest:
    lines: list[bytes]
    problem: str | None  # the transport's own finding: line-too-long, too-many-attributes


class PolicyServer:
    """A Component: `start()` listens on `[policy] listen`, `port` is the bound port."""

    name = "policy"

    def __init__(
        self,
        settings_provider: Callable[[], Settings],
        ban_lookup: BanLookup,
        clock: Callable[[], datetime],
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_line: int = MAX_LINE,
        max_attributes: int = MAX_ATTRIBUTES,
        database: Database | None = None,
    ) -> None:
        self._settings_provider = settings_provider
        self._ban_lookup = ban_lookup
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._max_line = max_line
        self._max_attributes = max_attributes
        self._database = database  # None: ban hits are logged, not audited (tests only)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._routing_for: Settings | None = None
        self._routing: tuple[RoutingTable, tzinfo] | None = None
        self.port = 0

    async def start(self) -> None:
        listen = self._settings_provider().policy_listen
        if listen is None:
            raise PolicyServerError("[policy] listen is empty")
        self._routing_now()  # a routing configuration that does not build fails start-up
        self._server = await asyncio.start_server(
            self._serve, listen.host, listen.port, limit=self._max_line
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        logs.event(log, logging.INFO, "policy-listening", host=listen.host, port=self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    def _routing_now(self) -> tuple[RoutingTable, tzinfo]:
        """The routing table of the current settings (SIGHUP swaps them), built once each."""
        settings = self._settings_provider()
        if self._routing is None or settings is not self._routing_for:
            table = RoutingTable.build(
                conduct_address=settings.gateway.conduct_address,
                local_domains=settings.gateway.local_domains,
                lists=settings.relay.lists,
                list_domains=settings.relay.list_domains,
                postmaster=settings.gateway.postmaster,
            )
            self._routing = (table, settings.reminders.timezone)
            self._routing_for = settings
        return self._routing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except _Unusable as problem:
            logs.event(log, logging.WARNING, "policy-connection-dropped", reason=str(problem))
        except TimeoutError:
            logs.event(log, logging.DEBUG, "policy-connection-idle")
        except (ConnectionError, asyncio.IncompleteReadError):
            logs.event(log, logging.DEBUG, "policy-connection-lost")
        except Exception as error:
            logs.event(log, logging.ERROR, "policy-connection-error", error=type(error).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            # The timeout covers the answer too: a peer that never reads cannot pin us.
            async with asyncio.timeout(self._idle_timeout):
                raw = await self._read_request(reader)
                if raw is None:
                    return
                decision = self._decide(raw)
                await self._audit(decision)
                writer.write(decision.answer.encode("utf-8"))
                await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> _RawRequest | None:
        """The lines of one request up to its empty line; None at a clean end of input."""
        lines: list[bytes] = []
        problem: str | None = None
        skipped = 0
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as eof:
                if lines or eof.partial or problem is not None:
                    raise  # the peer went away inside a request: nothing to answer
                return None
            except asyncio.LimitOverrunError as overrun:
                skipped += await _skip_line(reader, overrun.consumed)
                problem = problem or "line-too-long"
            else:
                line = line[:-1].removesuffix(b"\r")
                if not line:
                    return _RawRequest(lines, problem)
                if len(lines) < self._max_attributes:
                    lines.append(line)
                else:
                    skipped += len(line)
                    problem = problem or "too-many-attributes"
            if skipped > MAX_SKIPPED:
                raise _Unusable("request-too-large")

    async def _audit(self, decision: PolicyDecision) -> None:
        """SPEC section 6: every decision records which identity matched which ban."""
        ban = decision.ban
        if ban is None or self._database is None:
            return
        database = self._database

        def write() -> None:
            with database.transaction() as session:
                audit.append(
                    session,
                    at=self._clock(),
                    action="ban-hit",
                    actor="gateway",
                    case=ban.case,
                    detail={
                        "identity": "envelope",
                        "ban": ban.id,
                        "list": decision.list_address,
                        "verdict": "reject",
                        "stage": "policy",
                    },
                )

        try:
            await asyncio.to_thread(write)
        except Exception as error:
            # The refusal stands: Postfix is answered whether or not the record was kept.
            logs.event(log, logging.ERROR, "policy-audit-failed", error=type(error).__name__)

    def _decide(self, raw: _RawRequest) -> PolicyDecision:
        if raw.problem is not None:
            request = PolicyRequest(malformed=raw.problem)
        else:
            # Invalid UTF-8 is judged, not dropped: a regex ban may still catch it.
            request = parse_request(line.decode("utf-8", "replace") for line in raw.lines)
        try:
            table, zone = self._routing_now()
            decision = decide(request, table, self._ban_lookup, self._clock(), zone)
        except Exception as error:
            logs.event(log, logging.ERROR, "policy-error", error=type(error).__name__)
            return PolicyDecision(DUNNO, "error")
        _log_decision(request, decision)
        return decision


async def _skip_line(reader: asyncio.StreamReader, consumed: int) -> int:
    """Drop the rest of an over-long line, newline included; how many bytes were dropped."""
    dropped = 0
    while True:
        await reader.readexactly(consumed)
        dropped += consumed
        if dropped > MAX_SKIPPED:
            raise _Unusable("request-too-large")
        try:
            return dropped + len(await reader.readuntil(b"\n"))
        except asyncio.LimitOverrunError as overrun:
            consumed = overrun.consumed


def _log_decision(request: PolicyRequest, decision: PolicyDecision) -> None:
    if decision.ban is not None:
        # SPEC section 10: ban ids and rule ids at info, the banned address at debug only.
        logs.event(
            log,
            logging.INFO,
            "ban-hit",
            identity="envelope",
            rule=decision.rule,
            ban=decision.ban.id,
            list=decision.list_address,
            queue_id=request.queue_id or None,
        )
        logs.event(
            log, logging.DEBUG, "ban-hit-address", ban=decision.ban.id, sender=request.sender
        )
    elif request.malformed is not None:
        logs.event(log, logging.WARNING, "policy-malformed", reason=request.malformed)
    else:
        logs.event(
            log,
            logging.DEBUG,
            "policy-decision",
            rule=decision.rule,
            state=request.protocol_state,
            sender=request.sender,
            recipient=request.recipient,
        )
