"""Recipient routing (SPEC section 3): a table of rules, the first that matches decides."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from rules.addresses import AddressError, normalise_domain, subaddress
from rules.errors import GatewayError
from rules.tokens import (
    Bounce,
    Case,
    Confirm,
    Detail,
    Director,
    Moderate,
    Signed,
    Unknown,
    parse_detail,
)

# Mailman 3's own addresses beside each list (`LIST-SUFFIX`, optionally `+anything`).
# A ban keeps a sender from joining or asking the list's robot to post for them, but
# must never keep them from leaving, from reaching the owners, or from answering probes.
BANNED_SUFFIXES = frozenset({"join", "subscribe", "request"})
FREE_SUFFIXES = frozenset({"leave", "unsubscribe", "owner", "bounces", "confirm"})

UNKNOWN_LOCAL_REPLY = "550 5.1.1 No such user here"
RELAY_DENIED_REPLY = "554 5.7.1 relay access denied"
# RFC 5321 section 4.5.3.1.10: the client retries the rest in a later transaction.
SEND_SEPARATELY_REPLY = "452 4.5.3 Send separately"


class RoutingConfigError(GatewayError):
    """An address in the routing configuration that is not local@domain."""

    def __init__(self, what: str, value: str) -> None:
        super().__init__(f"{what} is not an address local@domain: {value!r}")
        self.what = what
        self.value = value


class RouteKind(Enum):
    CONDUCT = "conduct"
    LIST = "list"
    POSTMASTER = "postmaster"
    UNKNOWN_LOCAL = "unknown-local"
    RELAY_DENIED = "relay-denied"


class TransactionKind(Enum):
    """What one SMTP transaction carries: mail the gateway keeps, or a post it relays."""

    CONDUCT = "conduct"
    LIST = "list"


@dataclass(frozen=True)
class RoutingTable:
    """Routing configuration, normalised: lower case, IDNA domains. Build with `build`."""

    conduct_local: str
    conduct_domain: str
    local_domains: frozenset[str]
    lists: frozenset[tuple[str, str]]
    list_domains: frozenset[str]
    postmaster: str

    @classmethod
    def build(
        cls,
        conduct_address: str,
        local_domains: Iterable[str],
        lists: Iterable[str],
        list_domains: Iterable[str],
        postmaster: str,
    ) -> RoutingTable:
        conduct_local, conduct_domain = _config_address("conduct_address", conduct_address)
        _config_address("postmaster", postmaster)
        try:
            domains = frozenset(normalise_domain(d) for d in local_domains)
            list_doms = frozenset(normalise_domain(d) for d in list_domains)
        except AddressError as exc:
            raise RoutingConfigError("a domain", exc.address) from None
        return cls(
            conduct_local=conduct_local,
            conduct_domain=conduct_domain,
            # The conduct address's own domain is always local, whatever the config says.
            local_domains=domains | {conduct_domain},
            lists=frozenset(_config_address("a list", a) for a in lists),
            list_domains=list_doms,
            postmaster=postmaster.strip(),
        )

    @property
    def conduct_address(self) -> str:
        return f"{self.conduct_local}@{self.conduct_domain}"

    def own_domains(self) -> frozenset[str]:
        """Every domain whose mail the gateway answers for rather than relay-denies."""
        list_homes = frozenset(domain for _local, domain in self.lists)
        return self.local_domains | self.list_domains | list_homes


@dataclass(frozen=True)
class Route:
    """Where one recipient goes, and the rule id that decided (logged and audited)."""

    kind: RouteKind
    rule: str
    recipient: str
    detail: Detail | None = None  # CONDUCT only; None is the bare conduct address
    list_address: str | None = None  # LIST only
    bans_apply: bool = False  # LIST only
    forward_to: str | None = None  # POSTMASTER only

    @property
    def accepted(self) -> bool:
        return self.kind in _ACCEPTED

    @property
    def reply(self) -> str | None:
        """The SMTP refusal for this recipient, or None when it is accepted."""
        return _REFUSALS.get(self.kind)


_ACCEPTED = frozenset({RouteKind.CONDUCT, RouteKind.LIST, RouteKind.POSTMASTER})
_REFUSALS = {
    RouteKind.UNKNOWN_LOCAL: UNKNOWN_LOCAL_REPLY,
    RouteKind.RELAY_DENIED: RELAY_DENIED_REPLY,
}


@dataclass(frozen=True)
class _Recipient:
    local: str  # lower case, +detail kept
    domain: str  # normalised; "" when it does not parse
    bare: bool = False  # no @domain at all


@dataclass(frozen=True)
class _Hit:
    detail: Detail | None = None
    list_address: str | None = None
    bans_apply: bool = False
    forward_to: str | None = None


_Matcher = Callable[[RoutingTable, _Recipient], _Hit | None]


def _config_address(what: str, address: str) -> tuple[str, str]:
    local, at, domain = address.strip().strip("<>").rpartition("@")
    try:
        if not at or not local:
            raise AddressError(address, "not local@domain")
        return local.lower(), normalise_domain(domain)
    except AddressError:
        raise RoutingConfigError(what, address) from None


def _recipient(address: str) -> _Recipient:
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        return _Recipient(local=domain.lower(), domain="", bare=True)
    try:
        ascii_domain = normalise_domain(domain)
    except AddressError:
        ascii_domain = ""
    return _Recipient(local=local.lower(), domain=ascii_domain)


def _postmaster(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    if rcpt.local != "postmaster":
        return None
    # RFC 5321 section 4.1.1.3: a bare `<Postmaster>` must be accepted too.
    if not rcpt.bare and rcpt.domain not in table.own_domains():
        return None
    return _Hit(forward_to=table.postmaster)


def _conduct_address(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    matches = rcpt.local == table.conduct_local and rcpt.domain == table.conduct_domain
    return _Hit() if matches else None


def _conduct_subaddress(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    if rcpt.domain != table.conduct_domain:
        return None
    detail = subaddress(f"{rcpt.local}@{rcpt.domain}", table.conduct_address)
    if detail is None:
        return None
    # An empty detail (`conduct+@`) is the bare address.
    return _Hit(detail=parse_detail(detail) if detail else None)


def _list_address(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    # `dev+tag@` is `dev@` (Mailman 3 drops the +suffix of every list address it reads),
    # so it reaches the list and the list's bans apply to it.
    for local in dict.fromkeys((rcpt.local, rcpt.local.partition("+")[0])):
        if (local, rcpt.domain) in table.lists:
            return _Hit(list_address=f"{local}@{rcpt.domain}", bans_apply=True)
    return None


def _split_suffix(local: str) -> tuple[str, str | None]:
    """`dev-bounces+foo=bar.org` -> (`dev`, `bounces`); `dev` -> (`dev`, None)."""
    base = local.partition("+")[0]
    name, dash, suffix = base.rpartition("-")
    if dash and name and suffix in BANNED_SUFFIXES | FREE_SUFFIXES:
        return name, suffix
    return base, None


def _list_server_address(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    name, suffix = _split_suffix(rcpt.local)
    if suffix is None or (name, rcpt.domain) not in table.lists:
        return None
    return _Hit(list_address=f"{name}@{rcpt.domain}", bans_apply=suffix in BANNED_SUFFIXES)


def _list_domain(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    # Every address here is a list. `+tag` is dropped and robot suffixes map to their
    # list, so a list-scoped ban cannot be dodged by writing `dev+x@` or `dev-join@`.
    if not rcpt.domain or rcpt.domain not in table.list_domains:
        return None
    name, suffix = _split_suffix(rcpt.local)
    if not name:
        return None
    return _Hit(list_address=f"{name}@{rcpt.domain}", bans_apply=suffix not in FREE_SUFFIXES)


def _unknown_local(table: RoutingTable, rcpt: _Recipient) -> _Hit | None:
    return _Hit() if rcpt.domain and rcpt.domain in table.own_domains() else None


def _anywhere(_table: RoutingTable, _rcpt: _Recipient) -> _Hit | None:
    return _Hit()


# Order matters: postmaster@ a list domain is the postmaster, not a list; an exact
# list address beats a robot suffix (a list may be called `x-request`); and the
# conduct rules come before list domains in case an operator shares a domain.
RULES: tuple[tuple[str, RouteKind, _Matcher], ...] = (
    ("postmaster", RouteKind.POSTMASTER, _postmaster),
    ("conduct-address", RouteKind.CONDUCT, _conduct_address),
    ("conduct-subaddress", RouteKind.CONDUCT, _conduct_subaddress),
    ("list-address", RouteKind.LIST, _list_address),
    ("list-server-address", RouteKind.LIST, _list_server_address),
    ("list-domain", RouteKind.LIST, _list_domain),
    ("unknown-local", RouteKind.UNKNOWN_LOCAL, _unknown_local),
    ("relay-denied", RouteKind.RELAY_DENIED, _anywhere),
)


def route(table: RoutingTable, recipient: str) -> Route:
    """Where one RCPT TO address goes; total: every recipient gets a route."""
    rcpt = _recipient(recipient)
    for rule, kind, matcher in RULES:
        hit = matcher(table, rcpt)
        if hit is not None:
            return Route(
                kind=kind,
                rule=rule,
                recipient=recipient,
                detail=hit.detail,
                list_address=hit.list_address,
                bans_apply=hit.bans_apply,
                forward_to=hit.forward_to,
            )
    raise AssertionError("the last rule matches every recipient")  # pragma: no cover


def transaction_kind(route: Route) -> TransactionKind | None:
    """CONDUCT for mail the gateway keeps (conduct and postmaster), LIST for relayed posts.

    Postmaster mail groups with conduct mail: both are committed to the inbox and
    answered by the gateway, while a list post is proxied live to the upstream.
    None for a refused recipient, which never decides a transaction's kind.
    """
    if route.kind is RouteKind.LIST:
        return TransactionKind.LIST
    if route.kind in (RouteKind.CONDUCT, RouteKind.POSTMASTER):
        return TransactionKind.CONDUCT
    return None


def must_send_separately(first: TransactionKind | None, route: Route) -> bool:
    """Whether `route` is of the other kind than the transaction's first accepted recipient."""
    kind = transaction_kind(route)
    return first is not None and kind is not None and kind is not first


def rcpt_reply(first: TransactionKind | None, route: Route) -> str | None:
    """The RCPT TO refusal for `route` in a transaction so far of kind `first`; None accepts."""
    if route.reply is not None:
        return route.reply
    if must_send_separately(first, route):
        return SEND_SEPARATELY_REPLY
    return None


# Most specific first (SPEC section 2: signed, then case, then the conduct address).
# Function addresses name a purpose the bare address does not, so they outrank it;
# among them, token-bearing ones (confirm, bounce) outrank the fixed ones.
_SPECIFICITY: dict[type[Detail], int] = {
    Signed: 6,
    Case: 5,
    Confirm: 4,
    Bounce: 3,
    Moderate: 2,
    Director: 1,
    Unknown: 0,
}


def specificity(detail: Detail | None) -> int:
    """Signed 6 > Case 5 > Confirm 4 > Bounce 3 > Moderate 2 > Director 1 > bare/Unknown 0."""
    return 0 if detail is None else _SPECIFICITY[type(detail)]


def most_specific(routes: Sequence[Route]) -> Route | None:
    """The conduct route that decides a message sent to several; the first one on ties."""
    conduct = [r for r in routes if r.kind is RouteKind.CONDUCT]
    if not conduct:
        return None
    return max(conduct, key=lambda r: specificity(r.detail))
