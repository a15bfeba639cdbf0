"""A new report: open the case, acknowledge the reporter, send it to the staff who may see it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from handlers.effects import (
    NEW,
    AddParticipant,
    Audit,
    Effect,
    Envelope,
    OpenCase,
    Outcome,
    RecordIncoming,
    SendMail,
)
from handlers.message import ParsedMessage
from handlers.snapshot import Person, Snapshot
from rules import loops, naming
from rules.urgency import urgency_signals

RATE_LIMIT = loops.RATE_LIMIT_PER_HOUR


@dataclass(frozen=True)
class Intake:
    """How the report arrived: the rule that made it new, and whether to the director only."""

    rule: str
    possibly_related: int | None
    to_director: bool
    received: datetime


def named_people(message: ParsedMessage, people: Iterable[Person]) -> tuple[Person, ...]:
    """People the report names by address, or by the full display name in the configuration.

    Whole addresses only, normalised as in SPEC section 6 (`fred@` does not name `ed@`),
    and names on word boundaries. The reporter's own From names someone only when it is
    their address: a staff member's own report recuses them from it.
    """
    haystack = f"{message.header_text}\n{message.subject}\n{message.text}"
    addresses = naming.addresses_in(haystack) | set(message.to_cc)
    found = []
    for person in people:
        by_address = person.address in addresses or person.address == message.from_address
        if by_address or naming.names(haystack, person.name):
            found.append(person)
    return tuple(found)


def _recipients(
    snapshot: Snapshot,
    recused: set[str],
    urgent: bool,
    intake: Intake,
) -> tuple[list[Person], bool]:
    """Who gets the report, and whether the director is among them (SPEC section 5)."""
    team = snapshot.team
    director_recused = team.director.address in recused
    if intake.to_director and not director_recused:
        return [team.director], True
    staff = [p for p in team.staff if p.address not in recused]
    # A report naming staff goes to the director too; so does an urgent one.
    with_director = not director_recused and (urgent or bool(recused) or intake.to_director)
    if with_director and all(p.address != team.director.address for p in staff):
        staff.append(team.director)
    return staff, with_director


def _acknowledgement(message: ParsedMessage, snapshot: Snapshot) -> list[Effect]:
    sender = message.loop.envelope_sender
    reason = loops.suppress_auto_reply(message.loop)
    if reason is not None or not sender or message.from_address is None:
        return [Audit(NEW, "acknowledgement-suppressed", None, {"reason": reason or "no-sender"})]
    if not loops.rate_limit_allows(snapshot.automatic_replies.get(sender.lower(), 0), RATE_LIMIT):
        return [Audit(NEW, "acknowledgement-rate-limited", None, {})]
    return [
        SendMail(
            case=NEW,
            recipient=message.from_address,
            written=sender,
            kind="acknowledgement",
            template="acknowledgement",
            params={"case_tag": snapshot.team.case_tag},
            envelope=Envelope.NULL,
            automatic=True,
            auto_submitted="auto-replied",
            references_incoming=True,
        )
    ]


def _staff_copy(
    person: Person,
    message: ParsedMessage,
    snapshot: Snapshot,
    intake: Intake,
    urgent: bool,
    recused: set[str],
    to_director_only: bool,
) -> SendMail:
    sender = message.from_written or message.loop.envelope_sender or "(no sender)"
    related = (
        f"\nNote:     possibly related to #{intake.possibly_related}"
        if intake.possibly_related
        else ""
    )
    recusal = "\nRecused:  staff named in this report do not receive it" if recused else ""
    return SendMail(
        case=NEW,
        recipient=person.address,
        written=person.address,
        kind="copy",
        template="director-report" if to_director_only else "staff-report",
        params={
            "sender": sender,
            "subject": message.subject or "(no subject)",
            "received": intake.received.isoformat(timespec="seconds"),
            "rule": intake.rule,
            "related": related,
            "recusal": recusal,
            "urgent_marker": " (URGENT)" if urgent else "",
            "text": message.text,
        },
        subject=message.subject or "(no subject)",
        carries_original=True,
        via_name=message.from_name or sender,
        references_incoming=True,
    )


def intake(message: ParsedMessage, snapshot: Snapshot, received: Intake) -> Outcome:
    """Open a case for a new report (automatic mail never opens one: it is kept unfiled)."""
    if loops.is_automatic(message.loop):
        return Outcome(
            "unfiled",
            "automatic",
            (RecordIncoming(None, "auto-reply", "automatic", message.from_address),),
        )
    team = snapshot.team
    signals = urgency_signals(f"{message.subject}\n{message.text}")
    urgent = bool(signals)
    everyone = (*team.staff, team.director)
    recused = {p.address for p in named_people(message, everyone)}
    if received.to_director and team.director.address in recused:
        # A report to the director's address about the director goes to the staff.
        received = Intake(received.rule, received.possibly_related, False, received.received)
    recipients, with_director = _recipients(snapshot, recused, urgent, received)
    effects: list[Effect] = [OpenCase(message.subject, urgent, received.possibly_related)]
    reporter = message.from_address
    if reporter is not None:
        effects.append(
            AddParticipant(
                NEW, reporter, message.from_written or reporter, message.from_name, "reporter"
            )
        )
    for person in team.staff:
        if person.address != reporter:
            effects.append(
                AddParticipant(
                    NEW,
                    person.address,
                    person.address,
                    person.name,
                    "staff",
                    recused=person.address in recused,
                )
            )
    if (with_director or team.director.address in recused) and reporter != team.director.address:
        effects.append(
            AddParticipant(
                NEW,
                team.director.address,
                team.director.address,
                team.director.name,
                "director",
                recused=team.director.address in recused,
            )
        )
    effects.append(RecordIncoming(NEW, "report", received.rule, reporter))
    effects.append(
        Audit(
            NEW,
            "case-opened",
            reporter,
            {
                "rule": received.rule,
                "urgent": urgent,
                "signals": list(signals),
                "possibly_related": received.possibly_related,
                "recused": sorted(recused),
                "to_director": received.to_director,
            },
        )
    )
    effects += _acknowledgement(message, snapshot)
    to_director_only = received.to_director and recipients == [team.director]
    effects += [
        _staff_copy(p, message, snapshot, received, urgent, recused, to_director_only)
        for p in recipients
    ]
    return Outcome("report", received.rule, tuple(effects), case=NEW)
