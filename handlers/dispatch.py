"""Which handler takes a received message: a table of (rule, test, handler), first match wins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from handlers import bounces, correspondence, postmaster, report_intake
from handlers.effects import Outcome
from handlers.message import ParsedMessage
from handlers.snapshot import Snapshot
from rules import loops, threading
from rules.tokens import Bounce, Case, Detail, Director


@dataclass(frozen=True)
class Addressing:
    """The conduct recipients of the message, reduced to what decides its handling."""

    detail: Detail | None  # of the most specific conduct recipient; None: the bare address
    case_numbers: tuple[int, ...] = ()  # every conduct+N@ recipient
    postmaster_domain: str | None = None  # only postmaster@ recipients
    received: datetime | None = None


@dataclass(frozen=True)
class Incoming:
    message: ParsedMessage
    addressing: Addressing
    snapshot: Snapshot
    now: datetime

    @property
    def received(self) -> datetime:
        return self.addressing.received or self.now


def _is_bounce(incoming: Incoming) -> bool:
    return loops.is_bounce(incoming.message.loop, isinstance(incoming.addressing.detail, Bounce))


def _bounce(incoming: Incoming) -> Outcome:
    detail = incoming.addressing.detail
    return bounces.record(
        incoming.message, detail.bounce_id if isinstance(detail, Bounce) else None
    )


def _is_postmaster(incoming: Incoming) -> bool:
    return incoming.addressing.postmaster_domain is not None


def _postmaster(incoming: Incoming) -> Outcome:
    domain = incoming.addressing.postmaster_domain or ""
    return postmaster.forward(incoming.message, incoming.snapshot, domain, incoming.received)


def signals(incoming: Incoming) -> threading.ThreadSignals:
    message, snapshot = incoming.message, incoming.snapshot
    numbers = incoming.addressing.case_numbers
    return threading.ThreadSignals(
        sender=message.from_address or "",
        signed_cases=(snapshot.signed.case,) if snapshot.signed else (),
        references=message.references,
        case_address_numbers=numbers,
        subject_tag_number=threading.subject_tag(message.subject, snapshot.team.case_tag),
    )


def _conduct(incoming: Incoming) -> Outcome:
    """Thread it (SPEC section 4, failing closed), else open a new case."""
    decision = threading.decide(signals(incoming), incoming.snapshot.threading)
    case = incoming.snapshot.cases.get(decision.case) if decision.case is not None else None
    if case is not None:
        return correspondence.join(
            incoming.message, incoming.snapshot, case, decision.rule, incoming.received
        )
    intake = report_intake.Intake(
        rule=threading.NEW_CASE,
        possibly_related=decision.possibly_related,
        to_director=isinstance(incoming.addressing.detail, Director),
        received=incoming.received,
    )
    return report_intake.intake(incoming.message, incoming.snapshot, intake)


def _always(_incoming: Incoming) -> bool:
    return True


# Mailman's chains/builtin.py shape: each row a rule id, its test and what it does.
TABLE: tuple[tuple[str, Callable[[Incoming], bool], Callable[[Incoming], Outcome]], ...] = (
    ("bounce", _is_bounce, _bounce),
    ("postmaster", _is_postmaster, _postmaster),
    ("conduct", _always, _conduct),
)


def handle(incoming: Incoming) -> Outcome:
    for _rule, test, act in TABLE:
        if test(incoming):
            return act(incoming)
    raise AssertionError("the dispatch table ends with a rule that always matches")


def case_numbers(details: tuple[Detail | None, ...]) -> tuple[int, ...]:
    return tuple(d.number for d in details if isinstance(d, Case))
