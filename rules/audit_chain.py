"""The audit hash chain: salted digests linked by sequence (SPEC section 5, Audit)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainEvent:
    """What verification reads of one stored event; salt, actor and detail may be purged."""

    seq: int
    at: datetime
    case: int | None
    action: str
    actor: str | None
    detail: str | None
    salt: str | None
    digest: str
    link: str


@dataclass(frozen=True)
class ChainReport:
    count: int
    latest_link: str
    problem: str | None
    bad_seq: int | None


def event_digest(salt: str, actor: str | None, detail: str | None) -> str:
    """SHA-256 over salt, actor and detail; without the salt it cannot be guessed back."""
    return _sha256([salt, actor, detail])


def event_link(
    previous: str, seq: int, case: int | None, at: datetime, action: str, digest: str
) -> str:
    return _sha256([previous, seq, case, at.isoformat(timespec="microseconds"), action, digest])


def _sha256(parts: list[object]) -> str:
    canonical = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


PURGED = "purged"


def _edited(event: ChainEvent, purged_cases: Collection[int]) -> bool:
    """The digest no longer matches; or the salt is blank where no purge blanked it."""
    if event.salt is None:
        # A purge removes salt, actor and detail together, and only of a case whose
        # `purged` event is in the chain; a blank salt anywhere else hides an edit.
        purged = event.case is not None and event.case in purged_cases
        return not purged or event.actor is not None or event.detail is not None
    return event_digest(event.salt, event.actor, event.detail) != event.digest


def verify(events: Iterable[ChainEvent], purged_cases: Collection[int] = ()) -> ChainReport:
    """Walk events in sequence order; name the first that was edited, inserted or deleted.

    `purged_cases`: the cases with a `purged` event, whose events may have lost their salt.
    """
    previous = GENESIS
    expected_seq = 1
    count = 0
    for event in events:
        if event.seq != expected_seq:
            missing = "deleted" if event.seq > expected_seq else "out of order"
            return ChainReport(count, previous, f"event {expected_seq} is {missing}", expected_seq)
        if _edited(event, purged_cases):
            return ChainReport(count, previous, f"event {event.seq} was edited", event.seq)
        if (
            event_link(previous, event.seq, event.case, event.at, event.action, event.digest)
            != event.link
        ):
            return ChainReport(
                count, previous, f"event {event.seq} was edited or inserted", event.seq
            )
        previous = event.link
        expected_seq += 1
        count += 1
    return ChainReport(count, previous, None, None)
