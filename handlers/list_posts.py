"""Decides a list post per list: relay, reject, hold or discard, and which ban decided."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from handlers.outcome import Verdict
from rules.bans import Ban
from rules.list_identities import Identities
from rules.refusals import posting_refused

BanLookup = Callable[[str, str, datetime], Ban | None]
ACTIONS = {"reject": Verdict.REJECT, "hold": Verdict.HOLD, "discard": Verdict.DISCARD}


@dataclass(frozen=True)
class ListTarget:
    list_address: str
    recipient: str
    bans_apply: bool


@dataclass(frozen=True)
class NoContact:
    """Accused address -> the addresses they must not contact (reporters and targets)."""

    protected: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Message-ID of an earlier relayed post -> its sender (only for this post's references).
    referenced_senders: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    identity: str  # envelope | from | sender
    ban: Ban


@dataclass(frozen=True)
class ListVerdict:
    target: ListTarget
    verdict: Verdict
    rule: str
    hits: tuple[Hit, ...] = ()
    accused: str | None = None  # a no-contact hold: the poster's address the sanction names


@dataclass(frozen=True)
class ListDecision:
    verdicts: tuple[ListVerdict, ...]
    reply: str | None  # set when the whole message is refused

    def with_verdict(self, verdict: Verdict) -> tuple[ListVerdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict is verdict)


def _identities(envelope_sender: str, found: Identities) -> list[tuple[str, str]]:
    pairs = [("envelope", envelope_sender)] if envelope_sender else []
    pairs += [("from", a) for a in found.from_addresses]
    pairs += [("sender", a) for a in found.sender_addresses]
    return pairs


def _hits(
    pairs: Sequence[tuple[str, str]], target: ListTarget, lookup: BanLookup, now: datetime
) -> tuple[Hit, ...]:
    if not target.bans_apply:
        return ()
    hits = []
    for identity, address in pairs:
        ban = lookup(address, target.list_address, now)
        if ban is not None:
            hits.append(Hit(identity, ban))
    return tuple(hits)


def _no_contact_breach(
    pairs: Sequence[tuple[str, str]], found: Identities, no_contact: NoContact
) -> str | None:
    """The poster's address that a no-contact sanction names, when the post writes or
    replies to someone the sanction protects; None when it does neither."""
    for _, address in pairs:
        protected = no_contact.protected.get(address)
        if not protected:
            continue
        if protected & set(found.to_cc):
            return address
        replied_to = {no_contact.referenced_senders.get(mid) for mid in found.references}
        if protected & {s for s in replied_to if s}:
            return address
    return None


def _latest_end(hits: Sequence[Hit]) -> datetime | None:
    """The date a refusal may name: only when every deciding ban ends, the last end."""
    ends = [hit.ban.expires_at for hit in hits]
    if not ends or any(end is None for end in ends):
        return None
    return max(end for end in ends if end is not None)


def decide(
    *,
    envelope_sender: str,
    found: Identities,
    targets: Sequence[ListTarget],
    ban_action: str,
    lookup: BanLookup,
    no_contact: NoContact,
    now: datetime,
    zone: tzinfo,
) -> ListDecision:
    """One verdict per list; with `reject`, a ban on any list refuses the whole message."""
    pairs = _identities(envelope_sender, found)
    verdicts = []
    for target in targets:
        hits = _hits(pairs, target, lookup, now)
        accused = _no_contact_breach(pairs, found, no_contact) if target.bans_apply else None
        if hits:
            verdicts.append(ListVerdict(target, ACTIONS[ban_action], "ban", hits))
        elif accused is not None:
            # No-contact holds whatever ban_action says: a moderator should see it.
            verdicts.append(ListVerdict(target, Verdict.HOLD, "no-contact", accused=accused))
        else:
            verdicts.append(ListVerdict(target, Verdict.ACCEPT, "permitted"))
    rejected = [v for v in verdicts if v.verdict is Verdict.REJECT]
    if not rejected:
        return ListDecision(tuple(verdicts), None)
    deciding = [hit for v in rejected for hit in v.hits]
    # dev@ and dev-join@ are one list: name it once.
    named = list(dict.fromkeys(v.target.list_address for v in rejected))
    reply = posting_refused(named, _latest_end(deciding), zone)
    return ListDecision(tuple(verdicts), reply)
