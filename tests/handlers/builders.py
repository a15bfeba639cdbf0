"""Small builders for handler tests: a team, parsed messages, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime

from handlers.message import ParsedMessage
from handlers.snapshot import CaseView, ParticipantView, Person, Snapshot, Team
from rules.loops import LoopFacts
from rules.threading import ThreadFacts

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ALICE = Person("Alice Example", "alice@example.org")
BOB = Person("", "bob@example.org")
ERIN = Person("Erin Director", "ed@example.org")
TEAM = Team("conduct@example.org", "Conduct", (ALICE, BOB), ERIN, "hostmaster@example.org")


def message(
    *,
    sender: str | None = "rita@example.net",
    subject: str = "A report",
    text: str = "Something happened.",
    envelope: str | None = "rita@example.net",
    name: str = "Rita",
    headers: dict[str, str] | None = None,
    references: tuple[str, ...] = (),
    header_text: str = "",
    content_type: str = "text/plain",
) -> ParsedMessage:
    h = headers or {}
    return ParsedMessage(
        message_id="m1@example.net",
        from_name=name,
        from_address=sender,
        from_written=sender,
        subject=subject,
        date=None,
        references=references,
        to_cc=(),
        header_text=header_text or f"conduct@example.org {subject}",
        text=text,
        html_only=False,
        attachments=(),
        defects=(),
        loop=LoopFacts(
            envelope_sender=envelope,
            from_address=sender,
            auto_submitted=h.get("auto-submitted"),
            precedence=h.get("precedence"),
            list_id=h.get("list-id"),
            x_autoreply=h.get("x-autoreply"),
            content_type=content_type,
            subject=subject,
        ),
        reported_message_ids=(),
    )


def case_view(
    number: int = 3,
    *,
    participants: tuple[ParticipantView, ...] | None = None,
    escalated: bool = False,
    urgent: bool = False,
) -> CaseView:
    people = (
        participants
        if participants is not None
        else (
            ParticipantView("rita@example.net", "rita@example.net", "Rita", "reporter", False),
            ParticipantView("alice@example.org", "alice@example.org", "Alice", "staff", False),
            ParticipantView("bob@example.org", "bob@example.org", "", "staff", False),
        )
    )
    return CaseView(
        number, "new", "A report", urgent, True, None, escalated, False, False, NOW, people
    )


def snapshot(
    *,
    cases: tuple[CaseView, ...] = (),
    automatic: dict[str, int] | None = None,
    generated: dict[str, int] | None = None,
) -> Snapshot:
    views = {c.number: c for c in cases}
    facts = ThreadFacts(
        generated_ids=generated or {},
        received_ids={},
        participants={n: frozenset(p.address for p in c.participants) for n, c in views.items()},
        existing_cases=frozenset(views),
    )
    return Snapshot(TEAM, facts, views, None, automatic or {})
