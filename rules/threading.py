"""Which case a message joins (SPEC section 4): an ordered table of rules that fails closed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

_MESSAGE_ID = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")
_SUBJECT_PREFIX = re.compile(
    r"\s*(?:re|fwd?|aw|wg|sv|vs|antw|tr)\s*(?:\[\d{1,4}\])?\s*:", re.IGNORECASE
)
# Nine digits keep int() cheap on hostile input; no community has a billion cases.
_CASE_NUMBER = r"\s*#\s*(\d{1,9})\s*\]"


@dataclass(frozen=True)
class ThreadSignals:
    """What the message itself says about its case.

    `signed_cases`: case numbers of recipients whose signed-address token the
    caller has verified. `references`: Message-IDs without angle brackets,
    nearest first (see `reference_chain`). `sender`: the From address,
    normalised like the participants in `ThreadFacts`.
    """

    sender: str
    signed_cases: tuple[int, ...] = ()
    references: tuple[str, ...] = ()
    case_address_numbers: tuple[int, ...] = ()
    subject_tag_number: int | None = None


@dataclass(frozen=True)
class ThreadFacts:
    """A snapshot of the store: only cases in `existing_cases` can be joined."""

    generated_ids: Mapping[str, int] = field(default_factory=dict)
    received_ids: Mapping[str, int] = field(default_factory=dict)
    participants: Mapping[int, frozenset[str]] = field(default_factory=dict)
    existing_cases: frozenset[int] = frozenset()

    def is_participant(self, case: int, address: str) -> bool:
        return case in self.existing_cases and address in self.participants.get(case, frozenset())


@dataclass(frozen=True)
class ThreadDecision:
    """The case joined (None: open a new one), the rule id that decided, and a hint for staff.

    `possibly_related` is a case named by a non-participant; it is for staff
    only and must never reach the sender.
    """

    case: int | None
    rule: str
    possibly_related: int | None = None


Rule = Callable[[ThreadSignals, ThreadFacts], int | None]

NEW_CASE = "new-case"


def decide(signals: ThreadSignals, facts: ThreadFacts) -> ThreadDecision:
    """Evaluate `RULES` in order; the first that names a joinable case decides."""
    for rule_id, rule in RULES:
        case = rule(signals, facts)
        if case is not None:
            return ThreadDecision(case, rule_id)
    return ThreadDecision(None, NEW_CASE, _possibly_related(signals, facts))


def reference_chain(in_reply_to: str | None, references: str | None) -> tuple[str, ...]:
    """Message-IDs without angle brackets, nearest first, each once.

    In-Reply-To comes first (in its written order), then References from last
    to first (RFC 5322 section 3.6.4 appends the parent last). A header with no
    `<…>` at all is read as whitespace-separated ids, as some clients send.
    """
    nearest = [*_message_ids(in_reply_to or ""), *reversed(_message_ids(references or ""))]
    return tuple(dict.fromkeys(nearest))


def subject_tag(subject: str, case_tag: str) -> int | None:
    """N from `[<case_tag> #N]` at the start of `subject`, after any Re:/Fwd:/AW:… prefixes."""
    position = 0
    while (prefix := _SUBJECT_PREFIX.match(subject, position)) is not None:
        position = prefix.end()
    tag = re.compile(r"\s*\[\s*" + re.escape(case_tag) + _CASE_NUMBER, re.IGNORECASE)
    match = tag.match(subject, position)
    if match is None:
        return None
    number = int(match.group(1))
    return number or None


def _message_ids(header: str) -> list[str]:
    if "<" not in header:
        return [word for word in header.split() if "@" in word]
    ids = (_WHITESPACE.sub("", found) for found in _MESSAGE_ID.findall(header))
    return [message_id for message_id in ids if message_id]


def _signed_address(signals: ThreadSignals, facts: ThreadFacts) -> int | None:
    return _first_existing(signals.signed_cases, facts)


def _reference(signals: ThreadSignals, facts: ThreadFacts) -> int | None:
    # Nearest reference that qualifies wins; one that does not is skipped, not a stop.
    for message_id in signals.references:
        generated = facts.generated_ids.get(message_id)
        if generated is not None and generated in facts.existing_cases:
            return generated
        received = facts.received_ids.get(message_id)
        # A received Message-ID may have leaked (it was in someone's mail), so it
        # only threads the case's own participants.
        if received is not None and facts.is_participant(received, signals.sender):
            return received
    return None


def _case_address(signals: ThreadSignals, facts: ThreadFacts) -> int | None:
    return _first_participated(signals.case_address_numbers, signals.sender, facts)


def _subject_tag(signals: ThreadSignals, facts: ThreadFacts) -> int | None:
    number = signals.subject_tag_number
    return _first_participated(() if number is None else (number,), signals.sender, facts)


def _first_existing(cases: Iterable[int], facts: ThreadFacts) -> int | None:
    return next((case for case in cases if case in facts.existing_cases), None)


def _first_participated(cases: Iterable[int], sender: str, facts: ThreadFacts) -> int | None:
    return next((case for case in cases if facts.is_participant(case, sender)), None)


def _possibly_related(signals: ThreadSignals, facts: ThreadFacts) -> int | None:
    named = [*signals.case_address_numbers]
    if signals.subject_tag_number is not None:
        named.append(signals.subject_tag_number)
    return _first_existing(named, facts)


RULES: tuple[tuple[str, Rule], ...] = (
    ("signed-address", _signed_address),
    ("reference", _reference),
    ("case-address", _case_address),
    ("subject-tag", _subject_tag),
)
