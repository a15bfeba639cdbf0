"""Bounces: a failed DSN marks the mail it answers and tells who may know; never a case."""

from __future__ import annotations

from handlers.effects import Audit, Effect, MarkOutboxFailed, Outcome, RecordIncoming, SendMail
from handlers.message import DeliveryStatus, ParsedMessage
from handlers.snapshot import BouncedMail, CaseView, Person, Snapshot, Team
from rules import loops


def is_delivery_report(message: ParsedMessage) -> bool:
    """A DSN: multipart/report with report-type delivery-status (or none given)."""
    return loops.is_bounce(message.loop, to_bounce_address=False)


def _failure(message: ParsedMessage) -> DeliveryStatus | None:
    """The first recipient the DSN reports as failed; delayed, delivered or relayed
    mail is not a failure (RFC 3464 section 2.3.3)."""
    if not is_delivery_report(message):
        return None
    return next((s for s in message.delivery_status if s.action == "failed"), None)


def _may_know(person: str, case: CaseView | None, team: Team) -> bool:
    """Recused staff never hear of a case's mail; on a director-only case, only the director."""
    if case is None:
        return True
    if case.recused(person):
        return False
    return not case.director_only or team.is_director(person)


def notice_audience(entry: BouncedMail, case: CaseView | None, team: Team) -> list[str]:
    """Who caused the mail while they are still staff (or the director), else every staff
    member who may see its case (the director on a director-only case, or when every staff
    member is recused): someone who has left the team hears nothing more of its cases."""
    caused_by = entry.caused_by
    if caused_by and team.is_team(caused_by) and _may_know(caused_by, case, team):
        return [caused_by]
    people: list[Person] = [p for p in team.staff if _may_know(p.address, case, team)]
    if not people and case is not None and _may_know(team.director.address, case, team):
        people = [team.director]
    return [p.address for p in people]


def _notice(person: str, entry: BouncedMail, failure: DeliveryStatus) -> SendMail:
    """Which mail failed and what the DSN says; never the DSN itself, whose returned
    content can carry a staff copy of a report someone else may not see."""
    case = str(entry.case) if entry.case is not None else "-"
    return SendMail(
        case=None,
        recipient=person,
        written=person,
        kind="bounce-notice",
        template="bounce-notice",
        params={
            "case": case,
            "outbox_id": str(entry.outbox_id),
            "recipient": entry.recipient,
            "sent": entry.created_at.isoformat(timespec="seconds"),
            "message_id": entry.message_id,
            "status": failure.status or "(none given)",
            "diagnostic": failure.diagnostic or "(none given)",
        },
        subject=f"Undeliverable: mail on case #{entry.case}"
        if entry.case is not None
        else "Undeliverable mail",
    )


def record(message: ParsedMessage, snapshot: Snapshot) -> Outcome:
    """Only a DSN reporting a failed delivery marks the entry failed and tells anyone. Other
    mail to a bounce address (an out-of-office reply goes to the envelope sender) and DSNs
    of delayed or delivered mail are kept unfiled, nothing more."""
    entry = snapshot.bounced
    failure = _failure(message)
    dsn = is_delivery_report(message)
    kind = "bounce" if dsn else "auto-reply"
    effects: list[Effect] = [RecordIncoming(None, kind, "bounce", message.from_address)]
    detail: dict[str, object] = {
        "outbox_id": entry.outbox_id if entry is not None else None,
        "dsn": dsn,
        "failed": failure is not None,
        "reported": list(message.reported_message_ids),
    }
    if entry is None or failure is None:
        effects.append(Audit(None, "bounce-recorded", None, detail))
        return Outcome("bounce", "bounce", tuple(effects))
    effects.append(
        MarkOutboxFailed(entry.outbox_id, entry.case, f"bounced: {failure.status}".strip())
    )
    # A bounce of a bounce notice is not told again (no loop between two dead mailboxes).
    if entry.kind != "bounce-notice":
        case = snapshot.cases.get(entry.case) if entry.case is not None else None
        team = snapshot.team
        effects += [_notice(p, entry, failure) for p in notice_audience(entry, case, team)]
    return Outcome("bounce", "bounce", tuple(effects))
