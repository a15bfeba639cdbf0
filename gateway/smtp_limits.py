"""aiosmtpd's SMTP protocol with the gateway's limits: connection cap, sizes, command budgets."""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope

from rules.errors import GatewayError
from rules.routing import Route, RoutingTable, TransactionKind

TOO_BIG_REPLY = "552 5.3.4 Message size exceeds fixed maximum message size"
TOO_MANY_CONNECTIONS_REPLY = "421 4.7.0 Too many connections, try again later"
TOO_MANY_RECIPIENTS_REPLY = "452 4.5.3 Too many recipients"
SHUTTING_DOWN_REPLY = "421 4.3.2 Service shutting down, try again later"

# aiosmtpd 1.4 answers an oversized SIZE= and oversized data without an enhanced status
# code; RFC 3463 section 3.4 gives 5.3.4 ("message too big for system") for both.
_REWRITTEN_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG_REPLY,
    "552 Error: Too much mail data": TOO_BIG_REPLY,
}

# Per connection, not per transaction: a relay reusing its connection sends many
# MAIL/RCPT/DATA, while a client repeating anything else that often is looping or probing.
MESSAGES_PER_CONNECTION = 1000
OTHER_COMMANDS_PER_CONNECTION = 30


class SmtpTlsError(GatewayError):
    """The configured certificate or key cannot be loaded."""

    def __init__(self, certificate: Path, key: Path, why: str) -> None:
        super().__init__(
            f"[smtp] tls_certificate {certificate} / tls_key {key}: cannot be loaded: {why}"
        )


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server context for STARTTLS; clients are not asked for certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise SmtpTlsError(certificate, key, error.strerror or type(error).__name__) from None
    return context


def call_limits(max_recipients: int) -> dict[str, int]:
    """aiosmtpd's `command_call_limit`: past a budget, `421 4.7.0` and the connection closes."""
    return {
        "*": OTHER_COMMANDS_PER_CONNECTION,
        "MAIL": MESSAGES_PER_CONNECTION,
        "DATA": MESSAGES_PER_CONNECTION,
        "RSET": MESSAGES_PER_CONNECTION,
        "NOOP": MESSAGES_PER_CONNECTION,
        "RCPT": 20 * max(max_recipients, 100),
    }


class Transaction(Envelope):
    """aiosmtpd's envelope plus what the gateway decided during the transaction.

    aiosmtpd makes a new envelope at HELO/EHLO, RSET and after DATA, so this state
    never leaks from one transaction into the next.
    """

    def __init__(self) -> None:
        super().__init__()
        self.table: RoutingTable | None = None  # from the settings current at MAIL
        self.max_recipients = 0
        self.kind: TransactionKind | None = None  # fixed by the first accepted recipient
        self.routes: list[Route] = []  # one per accepted recipient, in order


# admit(connection, peername) -> None to serve it, or the reply that refuses it.
Admit = Callable[["GatewaySMTP", Any], str | None]
Release = Callable[["GatewaySMTP"], None]


class GatewaySMTP(SMTP):
    """One client connection: admitted or refused on arrival, released when it ends."""

    # aiosmtpd reads DATA up to CRLF only, so a message with bare LF line ends is one
    # long "line" to it, refused past RFC 5321's 1000 octets before it could be
    # normalised (SPEC section 4). Accept lines as Postfix does, up to a bound that
    # still caps each connection's read buffer; the end of DATA stays CRLF.CRLF only.
    line_length_limit = 64 * 1024

    def __init__(self, handler: Any, *, admit: Admit, release: Release, **options: Any) -> None:
        # aiosmtpd keeps command_size_limits on the class and widens it on every EHLO; an
        # instance copy keeps one connection's EHLOs from changing every other's limits.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **options)
        self._admit = admit
        self._release = release
        self._refused = False
        self._shut = False

    def _create_envelope(self) -> Transaction:
        return Transaction()

    @property
    def in_transaction(self) -> bool:
        """Between an accepted MAIL and the end of its DATA (or RSET)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A second call is the same connection after STARTTLS, already admitted.
        if self.transport is None:
            refusal = self._admit(self, transport.get_extra_info("peername"))
            if refusal is not None:
                self._refused = True
                _write_and_close(transport, refusal)
                return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # aiosmtpd restarts its idle timer only on commands, which would cut off a long
        # DATA on a slow link: any bytes from the client count as activity.
        self._reset_timeout()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._release(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status in _REWRITTEN_REPLIES:
            await super().push(_REWRITTEN_REPLIES[status])
        else:
            await super().push(status)

    def shut_down(self, reply: str = SHUTTING_DOWN_REPLY) -> None:
        """Tell the client `reply` and close; once, however often it is called."""
        if self._shut or self.transport is None:
            return
        self._shut = True
        _write_and_close(self.transport, reply)


def _write_and_close(transport: asyncio.BaseTransport, reply: str) -> None:
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.write(reply.encode("ascii") + b"\r\n")
    transport.close()
