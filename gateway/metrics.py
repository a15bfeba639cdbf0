"""The Prometheus metrics of SPEC section 10, in a registry of the gateway's own.

One `Metrics` object is made by the daemon and handed to the components that count.
SMTP decisions are counted where the client gets its answer: a recipient refused at
RCPT counts once (route `refused`, or `list` for a banned sender), a message once at
the end of DATA. The route of conduct mail is the kind of address it was sent to,
known at SMTP time: the conduct and director addresses are `report`, case and signed
addresses `case`, `+moderate` and `+confirm-` `moderate`, `+bounce-` `bounce`. A signed
address whose token belongs to a staff member or the executive director is `command`:
it is the one address through which they command a case by email (SPEC section 5), and
what they send there (commands or an internal note) is staff work, never
correspondence. The token check is an HMAC per staff address, so it costs nothing
at SMTP time. postmaster@ mail is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from rules.routing import Route, RouteKind, most_specific
from rules.tokens import Bounce, Case, Confirm, Moderate, Signed, verify_token
from storage.backlog import Backlog

PREFIX = "conduct_gateway_"
ROUTES = ("report", "case", "command", "moderate", "list", "bounce", "refused")
VERDICTS = ("accepted", "rejected", "held", "discarded", "deferred")
IDENTITIES = ("envelope", "from", "sender")
# The upstream answers in milliseconds when local, in seconds when busy; each step of a
# relay may take up to two minutes (list_service.RELAY_STEP_TIMEOUT).
RELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The series each route can produce, made at 0 so dashboards see them before the first.
_SERIES = {
    "report": ("accepted", "deferred"),
    "case": ("accepted", "deferred"),
    "command": ("accepted", "deferred"),
    "moderate": ("accepted", "deferred"),
    "bounce": ("accepted", "deferred"),
    "list": VERDICTS,
    "refused": ("rejected",),
}
_CONDUCT_ROUTES: dict[type[object], str] = {
    Signed: "case",
    Case: "case",
    Moderate: "moderate",
    Confirm: "moderate",
    Bounce: "bounce",
}

_T = TypeVar("_T")
# Whether a signed address belongs to a staff member or the director (see the docstring).
CommandAddress = Callable[[Signed], bool]


def staff_signed(signed: Signed, commanders: Iterable[str], secrets: Sequence[bytes]) -> bool:
    """Whether `signed`'s token was made for one of `commanders` on its case."""
    return any(verify_token(secrets, signed.number, who, signed.token) for who in commanders)


def route_label(route: Route, command_address: CommandAddress = lambda _: False) -> str | None:
    """The `route` label of one recipient; None for postmaster@, which is not counted."""
    if route.kind is RouteKind.LIST:
        return "list"
    if route.kind is RouteKind.CONDUCT:
        if isinstance(route.detail, Signed) and command_address(route.detail):
            return "command"
        return _CONDUCT_ROUTES.get(type(route.detail), "report")
    if route.kind is RouteKind.POSTMASTER:
        return None
    return "refused"


def reply_verdict(reply: str) -> str:
    """The verdict an SMTP reply tells the client: 2xx accepted, 4xx deferred, 5xx rejected."""
    return {"2": "accepted", "4": "deferred"}.get(reply[:1], "rejected")


class _Followed:
    """Counters kept by the components themselves (the sender, the pipeline), read at scrape."""

    def __init__(self) -> None:
        self.outbox_failed: Callable[[], int] = lambda: 0
        self.quarantined: Callable[[], int] = lambda: 0

    def describe(self) -> Iterable[Metric]:
        return self._families(0, 0)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.outbox_failed(), self.quarantined())

    def _families(self, failed: int, quarantined: int) -> list[Metric]:
        return [
            CounterMetricFamily(
                PREFIX + "outbox_failed",
                "Outgoing mail refused for good or given up on by this process's sender.",
                value=failed,
            ),
            CounterMetricFamily(
                PREFIX + "quarantined",
                "Inbox messages whose processing failed in this process (each attempt).",
                value=quarantined,
            ),
        ]


class Metrics:
    """The gateway's metrics; `registry` is what /metrics shows."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._oldest: datetime | None = None
        self._statuses: set[str] = set()
        self._smtp = Counter(
            PREFIX + "smtp_messages",
            "SMTP decisions: each recipient refused at RCPT, each message at the end of DATA.",
            ["route", "verdict"],
            registry=self.registry,
        )
        self._ban_hits = Counter(
            PREFIX + "ban_hits",
            "Ban hits by the identity that matched.",
            ["identity"],
            registry=self.registry,
        )
        self._relay = Histogram(
            PREFIX + "relay_duration_seconds",
            "Time the upstream list server took to answer a relayed post.",
            buckets=RELAY_BUCKETS,
            registry=self.registry,
        )
        self._inbox = self._gauge("inbox_pending", "Stored messages not yet processed.")
        self._outbox = self._gauge("outbox_pending", "Owed mail not yet handed over.")
        self._cases = self._gauge("cases_open", "Open cases by status.", ["status"])
        oldest = self._gauge(
            "oldest_unacknowledged_case_seconds",
            "Age of the oldest open case no staff member has written on; 0 when none.",
        )
        oldest.set_function(self._oldest_seconds)
        self._imap = self._gauge("imap_connected", "1 while the IMAP watcher holds a session.")
        self._leader = self._gauge("scheduler_leader", "1 while this instance runs the scheduler.")
        self._followed = _Followed()
        self.registry.register(self._followed)
        self._command_address: CommandAddress = lambda _: False
        for route, verdicts in _SERIES.items():
            for verdict in verdicts:
                self._smtp.labels(route, verdict)
        for identity in IDENTITIES:
            self._ban_hits.labels(identity)

    def _gauge(self, name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, text, labels, registry=self.registry)

    # -- wiring ---------------------------------------------------------------------

    def follow(
        self,
        *,
        outbox_failed: Callable[[], int],
        quarantined: Callable[[], int],
        scheduler_leader: Callable[[], bool],
        imap_connected: Callable[[], bool],
    ) -> None:
        """Read these components' own state at each scrape (plain attributes, no I/O)."""
        self._followed.outbox_failed = outbox_failed
        self._followed.quarantined = quarantined
        self._leader.set_function(lambda: float(scheduler_leader()))
        self._imap.set_function(lambda: float(imap_connected()))

    def know_commanders(self, command_address: CommandAddress) -> None:
        """How to tell a staff member's or the director's signed address (route `command`)."""
        self._command_address = command_address

    def show_backlog(self, backlog: Backlog) -> None:
        """The database figures, refreshed in the background by the metrics server."""
        self._inbox.set(backlog.inbox_pending)
        self._outbox.set(backlog.outbox_pending)
        for status in self._statuses - set(backlog.cases_open):
            self._cases.labels(status).set(0)  # no case has it any more
        for status, count in backlog.cases_open.items():
            self._cases.labels(status).set(count)
        self._statuses |= set(backlog.cases_open)
        self._oldest = backlog.oldest_unacknowledged

    def _oldest_seconds(self) -> float:
        if self._oldest is None:
            return 0.0
        return max(0.0, (self._clock() - self._oldest).total_seconds())

    # -- SMTP -----------------------------------------------------------------------

    def rcpt_refused(self, route: Route, reply: str) -> str:
        """Count a recipient refused for good; returns `reply`. A 452 ("send separately",
        too many recipients) is not a decision: the client sends it again later."""
        label = route_label(route, self._command_address)
        if reply.startswith("5") and label is not None:
            self._smtp.labels(label, "rejected").inc()
        return reply

    def kept(self, routes: Sequence[Route], reply: str) -> str:
        """Count conduct mail by its most specific recipient and the reply; returns `reply`."""
        decisive = most_specific(routes)
        label = None if decisive is None else route_label(decisive, self._command_address)
        if label is not None:
            self._smtp.labels(label, reply_verdict(reply)).inc()
        return reply

    def list_reply(self, reply: str) -> str:
        """Count a list post by the reply the client gets; returns `reply`."""
        self._smtp.labels("list", reply_verdict(reply)).inc()
        return reply

    def list_post(self, verdict: str) -> None:
        """Count a list post answered 250 without a relay: `held` or `discarded`."""
        self._smtp.labels("list", verdict).inc()

    # -- bans and relays ------------------------------------------------------------

    def ban_hits(self, identities: Iterable[str]) -> None:
        for identity in identities:
            self._ban_hits.labels(identity).inc()

    def envelope_hit(self, ban: _T) -> _T:
        """Count a ban found for an envelope sender (the policy service); returns it."""
        if ban is not None:
            self._ban_hits.labels("envelope").inc()
        return ban

    def relayed(self, seconds: float) -> None:
        self._relay.observe(seconds)
