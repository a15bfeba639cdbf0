"""New reports, recusal, the director's address, loops, and mail that joins a case."""

from __future__ import annotations

from handlers.dispatch import Addressing, Incoming, handle
from handlers.effects import (
    AddParticipant,
    Audit,
    Envelope,
    OpenCase,
    Outcome,
    RecordIncoming,
    SendMail,
)
from handlers.snapshot import ParticipantView
from rules.tokens import Case, Director
from tests.handlers.builders import NOW, case_view, message, snapshot


def run(msg, snap=None, detail=None, numbers=()):  # type: ignore[no-untyped-def]
    return handle(
        Incoming(msg, Addressing(detail, tuple(numbers), None, NOW), snap or snapshot(), NOW)
    )


def mails(outcome: Outcome) -> list[SendMail]:
    return [e for e in outcome.effects if isinstance(e, SendMail)]


def test_a_report_opens_a_case_acknowledges_and_reaches_every_staff_member() -> None:
    outcome = run(message())
    assert outcome.route == "report"
    assert outcome.rule == "new-case"
    assert any(isinstance(e, OpenCase) for e in outcome.effects)
    sent = mails(outcome)
    ack = [m for m in sent if m.kind == "acknowledgement"]
    assert len(ack) == 1
    assert ack[0].envelope is Envelope.NULL
    assert ack[0].auto_submitted == "auto-replied"
    assert ack[0].subject is None  # the fixed text, never the report's own Subject
    assert ack[0].params == {"case_tag": "Conduct"}  # quotes nothing from the report
    staff = sorted(m.recipient for m in sent if m.kind == "copy")
    assert staff == ["alice@example.org", "bob@example.org"]
    assert all(m.carries_original for m in sent if m.kind == "copy")


def test_an_urgent_report_also_goes_to_the_director_at_once() -> None:
    outcome = run(message(text="He threatened to hurt me at the venue."))
    assert next(e for e in outcome.effects if isinstance(e, OpenCase)).urgent
    assert "ed@example.org" in {m.recipient for m in mails(outcome) if m.kind == "copy"}


def test_a_report_naming_a_staff_member_by_address_is_not_sent_to_them() -> None:
    outcome = run(message(text="It was bob@example.org who did it."))
    recipients = {m.recipient for m in mails(outcome) if m.kind == "copy"}
    assert recipients == {"alice@example.org", "ed@example.org"}
    bob = next(
        e
        for e in outcome.effects
        if isinstance(e, AddParticipant) and e.address == "bob@example.org"
    )
    assert bob.recused


def test_a_report_naming_a_staff_member_by_full_name_recuses_them() -> None:
    outcome = run(message(text="Alice Example shouted at me."))
    assert "alice@example.org" not in {m.recipient for m in mails(outcome)}


def test_a_report_to_the_director_address_reaches_the_director_alone() -> None:
    outcome = run(message(), detail=Director())
    assert {m.recipient for m in mails(outcome) if m.kind == "copy"} == {"ed@example.org"}


def test_a_report_to_the_director_about_the_director_goes_to_staff() -> None:
    outcome = run(message(text="Erin Director made a threat... no, an insult."), detail=Director())
    recipients = {m.recipient for m in mails(outcome) if m.kind == "copy"}
    assert "ed@example.org" not in recipients
    assert recipients == {"alice@example.org", "bob@example.org"}


def test_automatic_mail_never_opens_a_case() -> None:
    outcome = run(message(headers={"auto-submitted": "auto-replied"}))
    assert outcome.route == "unfiled"
    assert not any(isinstance(e, OpenCase | SendMail) for e in outcome.effects)
    assert any(isinstance(e, RecordIncoming) and e.case is None for e in outcome.effects)


def test_precedence_bulk_suppresses_the_acknowledgement_but_opens_the_case() -> None:
    outcome = run(message(headers={"precedence": "bulk"}))
    assert outcome.route == "report"
    assert not [m for m in mails(outcome) if m.kind == "acknowledgement"]


def test_a_null_sender_report_opens_a_case_without_acknowledgement() -> None:
    outcome = run(message(envelope=None))
    assert outcome.route == "report"
    assert not [m for m in mails(outcome) if m.kind == "acknowledgement"]


def test_the_sixth_automatic_reply_in_an_hour_is_recorded_not_sent() -> None:
    outcome = run(message(), snapshot(automatic={"rita@example.net": 5}))
    assert not [m for m in mails(outcome) if m.kind == "acknowledgement"]
    assert any(
        isinstance(e, Audit) and e.action == "acknowledgement-rate-limited" for e in outcome.effects
    )
    assert [m for m in mails(outcome) if m.kind == "copy"]  # staff are never limited


def test_a_participant_writing_to_the_case_address_joins_it() -> None:
    outcome = run(message(), snapshot(cases=(case_view(3),)), detail=Case(3), numbers=(3,))
    assert outcome.route == "case"
    assert outcome.rule == "case-address"
    assert {m.recipient for m in mails(outcome)} == {"alice@example.org", "bob@example.org"}
    assert not [m for m in mails(outcome) if m.kind == "acknowledgement"]


def test_an_outsider_guessing_a_case_address_opens_a_new_case_possibly_related() -> None:
    outcome = run(
        message(sender="eve@example.com", envelope="eve@example.com"),
        snapshot(cases=(case_view(3),)),
        detail=Case(3),
        numbers=(3,),
    )
    assert outcome.route == "report"
    assert next(e for e in outcome.effects if isinstance(e, OpenCase)).possibly_related == 3
    ack = next(m for m in mails(outcome) if m.kind == "acknowledgement")
    assert "3" not in "".join(ack.params.values())  # nothing of case 3 reaches them


def test_an_outsider_with_the_subject_tag_gets_a_new_case() -> None:
    outcome = run(
        message(sender="eve@example.com", subject="Re: [Conduct #3] A report"),
        snapshot(cases=(case_view(3),)),
    )
    assert outcome.route == "report"


def test_a_reply_to_a_gateway_message_joins_from_anyone() -> None:
    outcome = run(
        message(sender="witness@example.com", references=("gw1@example.org",)),
        snapshot(cases=(case_view(3),), generated={"gw1@example.org": 3}),
    )
    assert outcome.route == "case"
    assert outcome.rule == "reference"


def test_a_staff_reply_is_an_internal_note_for_the_other_staff_only() -> None:
    outcome = run(
        message(sender="alice@example.org", envelope="alice@example.org"),
        snapshot(cases=(case_view(3),)),
        detail=Case(3),
        numbers=(3,),
    )
    sent = mails(outcome)
    assert {m.recipient for m in sent} == {"bob@example.org"}
    assert all(m.kind == "note" for m in sent)


def test_recused_staff_receive_nothing_about_the_case() -> None:
    from handlers.snapshot import ParticipantView

    view = case_view(
        3,
        participants=(
            ParticipantView("rita@example.net", "rita@example.net", "", "reporter", False),
            ParticipantView("alice@example.org", "alice@example.org", "", "staff", False),
            ParticipantView("bob@example.org", "bob@example.org", "", "staff", True),
        ),
    )
    outcome = run(message(), snapshot(cases=(view,)), detail=Case(3), numbers=(3,))
    assert {m.recipient for m in mails(outcome)} == {"alice@example.org"}


def test_the_director_sees_correspondence_once_the_case_is_escalated() -> None:
    outcome = run(
        message(), snapshot(cases=(case_view(3, escalated=True),)), detail=Case(3), numbers=(3,)
    )
    assert "ed@example.org" in {m.recipient for m in mails(outcome)}


def test_an_auto_reply_joins_its_thread_silently() -> None:
    outcome = run(
        message(headers={"x-autoreply": "yes"}),
        snapshot(cases=(case_view(3),)),
        detail=Case(3),
        numbers=(3,),
    )
    assert outcome.route == "case"
    assert mails(outcome) == []


def test_a_director_only_case_s_mail_reaches_the_director_even_past_new_staff() -> None:
    from dataclasses import replace

    from handlers.correspondence import staff_audience
    from handlers.reminders import audience
    from rules.reminders import STAFF

    # bob joined the staff after the case opened: he is not a participant, yet kept out.
    view = replace(
        case_view(
            3,
            participants=(
                ParticipantView("rita@example.net", "rita@example.net", "", "reporter", False),
                ParticipantView("alice@example.org", "alice@example.org", "", "staff", True),
                ParticipantView("ed@example.org", "ed@example.org", "", "director", False),
            ),
            escalated=True,
        ),
        director_only=True,
    )
    snap = snapshot(cases=(view,))
    assert [p.address for p in staff_audience(view, snap, exclude=None)] == ["ed@example.org"]
    assert [p.address for p in audience(view, snap.team, STAFF, None)] == ["ed@example.org"]
    outcome = run(message(text="More."), snap, detail=Case(3), numbers=(3,))
    assert {m.recipient for m in mails(outcome)} == {"ed@example.org"}
