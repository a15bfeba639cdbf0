"""Reminder and digest mail to staff: who gets what (SPEC section 7); never rate-limited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from handlers.effects import SendMail
from handlers.snapshot import CaseView, Person, Team
from rules import reminders
from rules.refusals import format_until


def audience(case: CaseView, team: Team, kind: str, assignee: str | None) -> list[Person]:
    """Staff who have not recused; the assignee alone where SPEC says so.

    A director-only case (or one whose every staff member is recused) reminds the
    director: nobody else may see it, and no report may wait unseen.
    """
    if case.director_only or all(case.recused(p.address) for p in team.staff):
        return [] if case.recused(team.director.address) else [team.director]
    staff = [p for p in team.staff if not case.recused(p.address)]
    if kind == reminders.ASSIGNEE and assignee:
        chosen = [p for p in staff if p.address == assignee]
        if team.is_director(assignee) and not case.recused(assignee):
            chosen = [team.director]
        if chosen:
            return chosen
    if kind == reminders.STAFF_AND_DIRECTOR and not case.recused(team.director.address):
        staff.append(team.director)
    return staff


def reminder_mails(
    due: reminders.Due, case: CaseView, team: Team, now: datetime, zone: tzinfo
) -> list[SendMail]:
    subject = reminders.SUBJECTS[due.kind]
    text = (
        f"{subject}.\n\nCase #{case.number}: {case.subject or '(no subject)'}\n"
        f"Status: {case.status}\nOpened: {format_until(case.created_at, zone)}\n"
    )
    return [
        SendMail(
            case=case.number,
            recipient=p.address,
            written=p.address,
            kind="reminder",
            template="reminder",
            params={"text": text},
            subject=subject,
        )
        for p in audience(case, team, due.audience, case.assignee)
    ]


def timer_mails(
    kind: str,
    case: CaseView | None,
    team: Team,
    recipient: str | None,
    note: str | None,
    zone: tzinfo,
    now: datetime,
) -> list[SendMail]:
    """`#remind` to its sender; ban and sanction ends to the case's staff."""
    subject = reminders.SUBJECTS.get(kind, "Reminder")
    lines = [subject + "."]
    if case is not None:
        lines.append(f"Case #{case.number}: {case.subject or '(no subject)'}")
    if note:
        lines.append(f"Note: {note}")
    text = "\n".join(lines) + "\n"
    if kind == "remind" and recipient:
        # Only while they may still see the case: staff (or the director) now, not recused
        # (SPEC section 5 applies commands "while that address is still staff").
        still = team.is_team(recipient)
        if not still or (case is not None and case.recused(recipient)):
            return []
        people = [recipient]
    elif case is not None:
        people = [p.address for p in audience(case, team, reminders.STAFF, None)]
    else:
        people = [p.address for p in team.staff]
    return [
        SendMail(
            case=case.number if case else None,
            recipient=person,
            written=person,
            kind="reminder",
            template="reminder",
            params={"text": text},
            subject=subject if case else f"[{team.case_tag}] {subject}",
        )
        for person in people
    ]


@dataclass(frozen=True)
class DigestCase:
    number: int
    status: str
    subject: str
    created_at: datetime
    recused: frozenset[str]
    director_only: bool = False  # never listed to staff, whoever joined the staff since


@dataclass(frozen=True)
class DigestFacts:
    cases: Sequence[DigestCase]
    held: int
    failed_mail: int
    quarantined: int
    unfiled: int
    refused_commands: int
    audit_count: int
    audit_link: str


def digest_text(facts: DigestFacts, reader: str, now: datetime, zone: tzinfo) -> str:
    """Open cases by age and status (not those the reader recused from, nor the
    director's alone: the digest's readers are staff), and what waits."""
    visible = sorted(
        (c for c in facts.cases if reader not in c.recused and not c.director_only),
        key=lambda c: c.created_at,
    )
    lines = [f"Daily digest, {format_until(now, zone)}", "", f"Open cases: {len(visible)}"]
    for case in visible:
        days = (now - case.created_at).days
        lines.append(f"  #{case.number:<5} {case.status:<13} {days:>4} days  {case.subject}")
    lines += [
        "",
        f"Held list posts waiting:             {facts.held}",
        f"Outbound mail that failed:           {facts.failed_mail}",
        f"Quarantined incoming messages:       {facts.quarantined}",
        f"Unfiled messages (auto-replies, …):  {facts.unfiled}",
        f"Refused commands (last day):         {facts.refused_commands}",
        "",
        f"Audit chain: {facts.audit_count} events, latest link {facts.audit_link}",
        "(Keep this mail: a later rewrite of the whole chain would not match it.)",
    ]
    return "\n".join(lines) + "\n"


def digest_mails(
    facts: DigestFacts,
    team: Team,
    now: datetime,
    zone: tzinfo,
) -> list[SendMail]:
    # Staff only: the director sees cases once escalated or urgent, not every open one.
    readers = team.staff
    return [
        SendMail(
            case=None,
            recipient=p.address,
            written=p.address,
            kind="reminder",
            template="reminder",
            params={"text": digest_text(facts, p.address, now, zone)},
            subject=f"[{team.case_tag}] Reminder: daily digest",
        )
        for p in readers
    ]
