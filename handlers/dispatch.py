"""Which handler takes a received message: a table of (rule, test, handler), first match wins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from handlers import (
    bounces,
    correspondence,
    moderation,
    postmaster,
    report_intake,
    staff_commands,
)
from handlers.effects import AddParticipant, Outcome
from handlers.message import ParsedMessage
from handlers.snapshot import STAFF_ROLES, CaseView, ParticipantView, Snapshot
from rules import threading
from rules.commands import CommandError, parse_commands
from rules.reply_text import new_text
from rules.tokens import Bounce, Case, Confirm, Detail, Director, Moderate


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
    imported: bool = False  # `import`: past mail is filed, never run as commands

    @property
    def received(self) -> datetime:
        return self.addressing.received or self.now


def _is_bounce(incoming: Incoming) -> bool:
    """A DSN, or mail to a bounce ID the outbox knows. An unknown bounce ID is conduct mail
    (SPEC section 3): a report, or unfiled when automatic, revealing nothing."""
    detail = incoming.addressing.detail
    bounced = incoming.snapshot.bounced
    known = (
        isinstance(detail, Bounce) and bounced is not None and bounced.bounce_id == detail.bounce_id
    )
    return known or bounces.is_delivery_report(incoming.message)


def _bounce(incoming: Incoming) -> Outcome:
    return bounces.record(incoming.message, incoming.snapshot)


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
        joining = _joining_staff(incoming, case)
        if joining is not None:
            case = replace(case, participants=(*case.participants, joining))
        outcome = _commands(incoming, case, decision.rule) or correspondence.join(
            incoming.message, incoming.snapshot, case, decision.rule, incoming.received
        )
        return _with_joining_staff(outcome, case.number, joining)
    intake = report_intake.Intake(
        rule=threading.NEW_CASE,
        possibly_related=decision.possibly_related,
        to_director=isinstance(incoming.addressing.detail, Director),
        received=incoming.received,
    )
    return report_intake.intake(incoming.message, incoming.snapshot, intake)


def _joining_staff(incoming: Incoming, case: CaseView) -> ParticipantView | None:
    """Staff (or the director) configured after the case opened, writing to their own
    signed address: on this case they are staff, as if they had been there from the start."""
    message, snapshot = incoming.message, incoming.snapshot
    sender, signed, team = message.from_address, snapshot.signed, snapshot.team
    if sender is None or incoming.imported or case.participant(sender) is not None:
        return None
    if signed is None or signed.case != case.number or signed.owner != sender:
        return None
    person = next((p for p in (*team.staff, team.director) if p.address == sender), None)
    if person is None:
        return None
    role = "director" if team.is_director(sender) else "staff"
    return ParticipantView(sender, sender, person.name, role, False)


def _with_joining_staff(outcome: Outcome, case: int, joining: ParticipantView | None) -> Outcome:
    """Record the joining staff member first, so that `#recuse` has their row to mark."""
    if joining is None or outcome.rule == "command-refused":
        return outcome
    added = AddParticipant(case, joining.address, joining.written, joining.name, joining.role)
    return replace(outcome, effects=(added, *outcome.effects))


def has_command_lines(text: str) -> bool:
    """The new text of the message (above quotes and signature) starts with a `#` line."""
    for line in new_text(text).splitlines():
        if line.strip():
            return line.lstrip().startswith("#")
    return False


def _commands(incoming: Incoming, case: CaseView, rule: str) -> Outcome | None:
    """Command lines from staff or the director: run when authorised, else refused silently.

    Anyone else's `#` lines are just text (a reporter's mail is correspondence).
    """
    message, snapshot = incoming.message, incoming.snapshot
    team = snapshot.team
    sender = message.from_address
    if incoming.imported or snapshot.policy is None:
        return None
    if not has_command_lines(message.text):
        return None
    if not team.is_team(sender):
        if _former_staff(case, sender):
            # Still on the case with a valid token, but no longer configured: refused,
            # never forwarded to the team as a note (SPEC "Who may command").
            return staff_commands.refused_silently(message, case, rule, "not-staff")
        return None
    reason = staff_commands.unauthorised_reason(message, snapshot, case, snapshot.policy)
    if reason is not None:
        return staff_commands.refused_silently(message, case, rule, reason)
    parsed = parse_commands(
        new_text(message.text), sender=sender or "", tz=snapshot.policy.zone, now=incoming.now
    )
    if isinstance(parsed, CommandError):
        return staff_commands.refused(message, case, rule, parsed)
    return staff_commands.run(message, snapshot, case, rule, parsed, incoming.now)


def _former_staff(case: CaseView, sender: str | None) -> bool:
    participant = case.participant(sender)
    return participant is not None and participant.role in STAFF_ROLES


def _is_moderate(incoming: Incoming) -> bool:
    return isinstance(incoming.addressing.detail, Moderate) and not incoming.imported


def _moderate(incoming: Incoming) -> Outcome:
    return moderation.request(incoming.message, incoming.snapshot, incoming.now)


def _is_confirmation(incoming: Incoming) -> bool:
    """A reply to a pending confirmation by its sender; anything else is conduct mail."""
    snapshot = incoming.snapshot
    return (
        isinstance(incoming.addressing.detail, Confirm)
        and not incoming.imported
        and snapshot.confirmation is not None
        and snapshot.confirmation.sender == incoming.message.from_address
    )


def _confirmation(incoming: Incoming) -> Outcome:
    outcome = moderation.confirm(incoming.message, incoming.snapshot, incoming.now)
    return outcome if outcome is not None else _conduct(incoming)


def _always(_incoming: Incoming) -> bool:
    return True


# Mailman's chains/builtin.py shape: each row a rule id, its test and what it does.
TABLE: tuple[tuple[str, Callable[[Incoming], bool], Callable[[Incoming], Outcome]], ...] = (
    ("bounce", _is_bounce, _bounce),
    ("postmaster", _is_postmaster, _postmaster),
    ("confirmation", _is_confirmation, _confirmation),
    ("moderate", _is_moderate, _moderate),
    ("conduct", _always, _conduct),
)


def handle(incoming: Incoming) -> Outcome:
    for _rule, test, act in TABLE:
        if test(incoming):
            return act(incoming)
    raise AssertionError("the dispatch table ends with a rule that always matches")


def case_numbers(details: tuple[Detail | None, ...]) -> tuple[int, ...]:
    return tuple(d.number for d in details if isinstance(d, Case))
