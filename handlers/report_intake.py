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
    UpdateCase,
)
from handlers.message import ParsedMessage
from handlers.snapshot import Person, Snapshot, Team
from rules import loops, naming
from rules.addresses import AddressError, normalise
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
    their address: a staff member's own report recuses them from it. A message attached
    whole is part of the report: its addresses (From included), names and text count.
    """
    enclosed = message.enclosed
    haystack = "\n".join(
        (
            message.header_text,
            message.subject,
            message.text,
            *(f"{found.header_text}\n{found.text}" for found in enclosed),
        )
    )
    addresses = naming.addresses_in(haystack) | set(message.to_cc)
    addresses |= {address for found in enclosed for address in found.addresses}
    found = []
    for person in people:
        by_address = person.address in addresses or person.address == message.from_address
        if by_address or naming.names(haystack, person.name):
            found.append(person)
    return tuple(found)


@dataclass(frozen=True)
class Routing:
    """Who gets the report and who is kept from the case (SPEC sections 3 and 5)."""

    recipients: tuple[Person, ...]
    recused: frozenset[str]  # participants recorded as recused: they get nothing more
    director_only: bool  # the director alone handles the case from now on
    last_resort: bool = False  # every staff member was named, so the director gets it


def route(team: Team, named: frozenset[str], urgent: bool, to_director: bool) -> Routing:
    """To conduct+director@ (not naming the director): the director alone, with every staff
    member recused, so that no later mail, reminder, digest or bounce notice reaches them.
    Naming staff recuses them and adds the director. When no staff member is left, the
    director alone gets it, even if named: a report must reach someone, and the director
    is where the response procedure escalates to."""
    director = team.director
    all_staff = frozenset(p.address for p in team.staff)
    if to_director and director.address not in named:
        return Routing((director,), named | all_staff, director_only=True)
    staff = tuple(p for p in team.staff if p.address not in named)
    if not staff:
        last_resort = director.address in named
        return Routing((director,), all_staff, director_only=True, last_resort=last_resort)
    # A report naming staff goes to the director too; so does an urgent one.
    if director.address not in named and (urgent or named):
        staff = (*staff, director)
    return Routing(staff, named, director_only=False)


def _named(message: ParsedMessage, team: Team) -> frozenset[str]:
    return frozenset(p.address for p in named_people(message, (*team.staff, team.director)))


def audience(message: ParsedMessage, team: Team, to_director: bool) -> tuple[Person, ...]:
    """Who would get this report: for a notice about mail that never becomes a case (an
    IMAP message too large to take in), which shows its From and Subject and so must not
    reach anyone the report itself would be kept from (SPEC section 5)."""
    named = _named(message, team)
    urgent = bool(urgency_signals(f"{message.subject}\n{message.text}"))
    return route(team, named, urgent, to_director and team.director.address not in named).recipients


@dataclass(frozen=True)
class Reporter:
    address: str  # normalised
    written: str
    name: str


def _envelope_sender(message: ParsedMessage) -> Reporter | None:
    """The envelope sender (for IMAP and `ingest`, the Return-Path), normalised; None for
    `<>`, none at all, or one that does not parse."""
    sender = (message.loop.envelope_sender or "").strip().strip("<>").strip()
    if not sender:
        return None
    try:
        return Reporter(normalise(sender), sender, "")
    except AddressError:
        return None


def _reporter(message: ParsedMessage) -> Reporter | None:
    """The From address, else the envelope sender (SPEC section 5 sends the acknowledgement
    there), so a report without From is still answered and the reporter's reply to their
    signed address still finds the case."""
    if message.from_address is not None:
        written = message.from_written or message.from_address
        return Reporter(message.from_address, written, message.from_name)
    return _envelope_sender(message)


def _unlimited(snapshot: Snapshot, address: str) -> bool:
    """SPEC section 4: mail to staff, the executive director and moderators is never
    rate-limited, the acknowledgements of their own reports included. The acknowledgement
    goes to the envelope sender, so that is the address compared (normalised)."""
    team = snapshot.team
    if team.is_team(address):
        return True
    return snapshot.policy is not None and bool(snapshot.policy.moderated_by(address))


def _acknowledgement(message: ParsedMessage, snapshot: Snapshot) -> list[Effect]:
    """To the envelope sender (SPEC section 5, RFC 3834 section 4), and so signed for it: a
    From that differs is unproven, and a token for the From would hand its owner's signed
    address (a staff member's, say) to whoever wrote the envelope. A reporter behind a
    forwarder that rewrites the envelope (SRS) still threads by References (SPEC section 4,
    rule 2): the acknowledgement's Message-ID is one the gateway generated for the case."""
    sender = message.loop.envelope_sender
    reason = loops.suppress_auto_reply(message.loop)
    acknowledged = _envelope_sender(message)
    if reason is not None or not sender or acknowledged is None:
        return [Audit(NEW, "acknowledgement-suppressed", None, {"reason": reason or "no-sender"})]
    sent = snapshot.automatic_replies.get(sender.lower(), 0)
    unlimited = _unlimited(snapshot, acknowledged.address)
    if not unlimited and not loops.rate_limit_allows(sent, RATE_LIMIT):
        return [Audit(NEW, "acknowledgement-rate-limited", None, {})]
    return [
        SendMail(
            case=NEW,
            recipient=acknowledged.address,
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


def _recusal_note(routing: Routing, named: frozenset[str], to_director: bool) -> str:
    if routing.last_resort:
        return (
            "\nRecused:  the report names every staff member and you; nobody else can"
            "\n          handle it, so it reaches you alone"
        )
    if routing.director_only and not to_director:
        return "\nRecused:  the report names every staff member; it reaches you alone"
    return "\nRecused:  staff named in this report do not receive it" if named else ""


def _staff_copy(
    person: Person,
    message: ParsedMessage,
    intake: Intake,
    urgent: bool,
    recusal: str,
    to_director_only: bool,
) -> SendMail:
    sender = message.from_written or message.loop.envelope_sender or "(no sender)"
    related = (
        f"\nNote:     possibly related to #{intake.possibly_related}"
        if intake.possibly_related
        else ""
    )
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


def _participants(
    team: Team, routing: Routing, named: frozenset[str], reporter: Reporter | None
) -> list[Effect]:
    """The reporter, every staff member (recused or not) and, when involved, the director."""
    effects: list[Effect] = []
    own = reporter.address if reporter is not None else None
    if reporter is not None:
        effects.append(
            AddParticipant(NEW, reporter.address, reporter.written, reporter.name, "reporter")
        )
    for person in team.staff:
        if person.address != own:
            recused = person.address in routing.recused
            effects.append(
                AddParticipant(NEW, person.address, person.address, person.name, "staff", recused)
            )
    director = team.director
    in_it = director in routing.recipients
    if (in_it or director.address in named) and own != director.address:
        effects.append(
            AddParticipant(
                NEW, director.address, director.address, director.name, "director", not in_it
            )
        )
    return effects


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
    named = _named(message, team)
    # A report to the director's address about the director goes to the staff.
    to_director = received.to_director and team.director.address not in named
    routing = route(team, named, urgent, to_director)
    reporter = _reporter(message)
    effects: list[Effect] = [
        OpenCase(
            message.subject, urgent, received.possibly_related, director_only=routing.director_only
        )
    ]
    effects += _participants(team, routing, named, reporter)
    if routing.director_only:
        # The case is with the director from the start: they may command it (SPEC "Who may
        # command") and no "not yet escalated" reminder is due.
        effects.append(UpdateCase(NEW, {"escalated_at": received.received}))
    party = reporter.address if reporter is not None else None
    effects.append(RecordIncoming(NEW, "report", received.rule, party))
    effects.append(
        Audit(
            NEW,
            "case-opened",
            party,
            {
                "rule": received.rule,
                "urgent": urgent,
                "signals": list(signals),
                "possibly_related": received.possibly_related,
                "recused": sorted(routing.recused),
                "to_director": received.to_director,
                "director_only": routing.director_only,
                "last_resort": routing.last_resort,
            },
        )
    )
    effects += _acknowledgement(message, snapshot)
    recusal = _recusal_note(routing, named, to_director)
    effects += [
        _staff_copy(p, message, received, urgent, recusal, to_director) for p in routing.recipients
    ]
    return Outcome("report", received.rule, tuple(effects), case=NEW)
