"""Postfix policy delegation (SPEC section 6): one request in, DUNNO or a ban refusal out.

The protocol (Postfix SMTPD_POLICY_README): `name=value` lines ended by an empty line;
the answer is `action=...` and an empty line. The service applies envelope-sender bans
only, so it answers DUNNO (let Postfix's later restrictions decide) or a 550 refusal:
never OK or PERMIT, which would skip `reject_unauth_destination` and make Postfix an
open relay, nor HOLD or DISCARD, which would act on a whole message for one recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from rules.bans import Ban
from rules.refusals import posting_refused
from rules.routing import RouteKind, RoutingTable, route

ACCESS_POLICY = "smtpd_access_policy"
DUNNO = "DUNNO"

# (address, list address, now) -> the deciding ban, or None; BanIndex.match fits.
BanLookup = Callable[[str, str, datetime], Ban | None]


@dataclass(frozen=True)
class PolicyRequest:
    """The attributes the decision reads; `malformed` names what was wrong, None if nothing.

    Postfix sends many more (client_address, helo_name, sasl_*, ...); unknown ones are
    ignored as the protocol asks, so newer Postfix versions keep working.
    """

    request: str = ""
    protocol_state: str = ""
    sender: str = ""
    recipient: str = ""
    queue_id: str = ""
    malformed: str | None = None


@dataclass(frozen=True)
class PolicyDecision:
    """The action, the stable rule id that decided (logged), and the ban and list if any."""

    action: str
    rule: str
    list_address: str | None = None
    ban: Ban | None = None

    @property
    def answer(self) -> str:
        return f"action={self.action}\n\n"


def parse_request(lines: Iterable[str]) -> PolicyRequest:
    """One request's lines (without newlines or the ending empty line) as a PolicyRequest.

    Never raises: a request that is not a well-formed `smtpd_access_policy` request
    comes back with `malformed` set, which `decide` answers with DUNNO.
    """
    attributes: dict[str, str] = {}
    for line in lines:
        name, equals, value = line.partition("=")  # a value may hold "=" (BATV prvs=...=)
        if not equals:
            return PolicyRequest(malformed="no-equals-sign")
        if not name:
            return PolicyRequest(malformed="empty-name")
        if name in attributes:
            return PolicyRequest(malformed="duplicate-attribute")
        attributes[name] = value
    if attributes.get("request") != ACCESS_POLICY:
        return PolicyRequest(malformed="not-access-policy")
    if not attributes.get("protocol_state"):
        return PolicyRequest(request=ACCESS_POLICY, malformed="no-protocol-state")
    return PolicyRequest(
        request=ACCESS_POLICY,
        protocol_state=attributes["protocol_state"],
        sender=attributes.get("sender", ""),
        recipient=attributes.get("recipient", ""),
        queue_id=attributes.get("queue_id", ""),
    )


def _is_null_sender(sender: str) -> bool:
    # Postfix sends the null sender as an empty value; `<>` from hand-made requests.
    return sender.strip() in ("", "<>")


def decide(
    request: PolicyRequest,
    table: RoutingTable,
    lookup: BanLookup,
    now: datetime,
    zone: tzinfo,
) -> PolicyDecision:
    """DUNNO, unless a RCPT for a list whose bans apply comes from a banned envelope sender.

    A null sender (bounces, auto-replies) is never refused: bans are on people, and
    refusing a bounce would only bounce it again. `zone` renders a timed ban's end.
    """
    if request.malformed is not None:
        return PolicyDecision(DUNNO, "malformed")
    if request.protocol_state.upper() != "RCPT":
        return PolicyDecision(DUNNO, "not-rcpt")
    if _is_null_sender(request.sender):
        return PolicyDecision(DUNNO, "null-sender")
    target = route(table, request.recipient)
    if target.kind is not RouteKind.LIST or target.list_address is None:
        return PolicyDecision(DUNNO, "not-a-list")
    if not target.bans_apply:
        return PolicyDecision(DUNNO, "bans-do-not-apply", target.list_address)
    ban = lookup(request.sender, target.list_address, now)
    if ban is None:
        return PolicyDecision(DUNNO, "not-banned", target.list_address)
    refusal = posting_refused([target.list_address], ban.expires_at, zone)
    return PolicyDecision(refusal, "banned", target.list_address, ban)
