"""When a closed case's personal data goes (SPEC section 7a), with `now` passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

EXTENDING_OUTCOMES = frozenset({"resolved", "flagged", "banned"})


@dataclass(frozen=True)
class Retention:
    no_violation: timedelta
    resolved: timedelta
    flagged: timedelta
    banned_extra: timedelta


def expunge_at(
    outcome: str, closed_at: datetime, retention: Retention, ban_ends: Sequence[datetime | None]
) -> datetime | None:
    """The expunge date of a case closed with `outcome`; None: kept while a ban has no end.

    `banned` keeps the data for `banned_extra` after the last of the case's bans ends
    (after the Django code of conduct's records policy); without bans, from closing.
    """
    if outcome == "no-violation":
        return closed_at + retention.no_violation
    if outcome == "flagged":
        return closed_at + retention.flagged
    if outcome == "banned":
        if any(end is None for end in ban_ends):
            return None
        last = max((end for end in ban_ends if end is not None), default=closed_at)
        return max(last, closed_at) + retention.banned_extra
    return closed_at + retention.resolved


def is_due(expunge: datetime | None, now: datetime) -> bool:
    """Due when the expunge date is not after now."""
    return expunge is not None and expunge <= now


def ban_end(expires_at: datetime | None, lifted_at: datetime | None) -> datetime | None:
    """When a ban ended or will end: lifting it early is its end (None: it has no end yet)."""
    if lifted_at is not None and (expires_at is None or lifted_at < expires_at):
        return lifted_at
    return expires_at


def settled(own: datetime | None, floors: Sequence[datetime | None]) -> datetime | None:
    """A case's date from its own outcome and the dates of later cases naming the same
    accused (SPEC section 7a): no earlier than any of them; None while one of them is None."""
    if own is None or any(floor is None for floor in floors):
        return None
    return max([own, *(floor for floor in floors if floor is not None)])


def extended(current: datetime | None, floor: datetime | None) -> datetime | None:
    """An earlier case naming the same accused keeps its data no earlier than `floor`.

    None means "no date yet" (open, or a ban without end): it wins either way.
    """
    if current is None or floor is None:
        return None
    return max(current, floor)
