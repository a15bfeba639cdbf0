"""What the SMTP ingress asks of the list relay: check a sender at RCPT, deliver at DATA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rules.routing import Route


@dataclass(frozen=True)
class IncomingEnvelope:
    """One SMTP transaction's envelope as the client gave it.

    `mail_options` and `rcpt_options` are the ESMTP parameters in upper case as
    received (`SIZE=1234`, `BODY=8BITMIME`, `SMTPUTF8`), so a relay can pass them on.
    """

    mail_from: str  # "" for the null sender <>
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    peer: str  # "host:port" of the client
    helo: str  # the client's HELO/EHLO name

    def _option(self, name: str) -> str | None:
        for option in self.mail_options:
            key, equals, value = option.partition("=")
            if key == name:
                return value if equals else ""
        return None

    @property
    def size(self) -> int | None:
        """The client's SIZE= declaration, if any."""
        value = self._option("SIZE")
        return int(value) if value and value.isdigit() else None

    @property
    def body(self) -> str | None:
        """`7BIT` or `8BITMIME` when the client gave BODY=, else None."""
        return self._option("BODY") or None

    @property
    def smtputf8(self) -> bool:
        return self._option("SMTPUTF8") is not None


class ListGate(Protocol):
    """The list relay as the ingress sees it (SPEC section 6)."""

    async def check_envelope(self, sender: str, route: Route) -> str | None:
        """At RCPT for a LIST route: an SMTP reply refusing this recipient, or None."""
        ...

    async def deliver(self, envelope: IncomingEnvelope, routes: Sequence[Route], raw: bytes) -> str:
        """At DATA for a list transaction: relay `raw` (line ends normalised) and return the
        SMTP reply for the client."""
        ...
