"""Mail that joins a case: copies to staff, or a staff member's internal note."""

from __future__ import annotations

from datetime import datetime

from handlers.effects import Audit, Effect, Outcome, RecordIncoming, SendMail, UpdateCase
from handlers.message import ParsedMessage
from handlers.snapshot import CaseView, Person, Snapshot
from rules import loops


def staff_audience(case: CaseView, snapshot: Snapshot, *, exclude: str | None) -> list[Person]:
    """Staff who are not recused, and the director once the case is escalated or urgent.

    A director-only case (mail to conduct+director@) goes to the director alone, whatever
    the staff list says now: staff configured after it opened are not its participants.
    """
    team = snapshot.team
    director = team.director
    if case.director_only:
        keep = not case.recused(director.address) and director.address != exclude
        return [director] if keep else []
    people = [p for p in team.staff if not case.recused(p.address) and p.address != exclude]
    director_in = case.escalated or case.urgent
    if (
        director_in
        and not case.recused(director.address)
        and director.address != exclude
        and all(p.address != director.address for p in people)
    ):
        people.append(director)
    return people


def _role(case: CaseView, sender: str | None) -> str:
    participant = case.participant(sender)
    return participant.role if participant is not None else "non-participant"


def join(
    message: ParsedMessage, snapshot: Snapshot, case: CaseView, rule: str, received: datetime
) -> Outcome:
    """File the message on its case and tell the staff who may see it."""
    sender = message.from_address
    role = _role(case, sender)
    if loops.is_automatic(message.loop):
        # Auto-replies join their thread silently: kept, never forwarded.
        return Outcome(
            "case",
            rule,
            (RecordIncoming(case.number, "auto-reply", rule, sender),),
            case=case.number,
        )
    is_staff = role in ("staff", "director") and not case.recused(sender or "")
    kind = "note" if is_staff else "correspondence"
    effects: list[Effect] = [
        RecordIncoming(case.number, kind, rule, sender),
        UpdateCase(case.number, {"last_activity_at": received}),
        Audit(case.number, f"{kind}-received", sender, {"rule": rule, "role": role}),
    ]
    if is_staff:
        effects.append(UpdateCase(case.number, {"first_staff_mail_at": received}))
    text_params = {
        "case": str(case.number),
        "text": message.text,
        "sender": message.from_written or "(no sender)",
        "subject": message.subject or "(no subject)",
        "received": received.isoformat(timespec="seconds"),
        "rule": rule,
        "role": role,
        "author": message.from_written or "(unknown)",
        "urgent_marker": " (URGENT)" if case.urgent else "",
    }
    for person in staff_audience(case, snapshot, exclude=sender):
        effects.append(
            SendMail(
                case=case.number,
                recipient=person.address,
                written=person.address,
                kind=kind if kind == "note" else "copy",
                template="staff-note" if is_staff else "staff-copy",
                params=text_params,
                subject=message.subject or "(no subject)",
                carries_original=not is_staff,
                via_name=message.from_name or message.from_written,
                references_incoming=True,
                caused_by=sender if is_staff else None,
            )
        )
    return Outcome("case", rule, tuple(effects), case=case.number)
