"""Reports to conduct+director@ reach the executive director alone, from the first mail on."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.pipeline import Pipeline
from gateway.reminder_jobs import Jobs
from rules.tokens import reply_token
from storage import inbox
from storage.models import AuditEvent, Case, OutboxEntry, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway

REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct+director@example.org\r\n"
    b"Subject: About the board\r\nMessage-ID: <dir1@example.net>\r\n\r\n"
    b"Something happened that I can only tell the director.\r\n"
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def deliver(gw: Gateway, raw: bytes, sender: str | None, to: str) -> None:
    with gw.database.transaction() as session:
        inbox.store(
            session, raw=raw, envelope_sender=sender, recipients=(to,), source="smtp", now=gw.now()
        )
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def outbox(gw: Gateway, after: int = 0) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(
            session.execute(
                select(OutboxEntry).where(OutboxEntry.id > after).order_by(OutboxEntry.id)
            ).scalars()
        )


def last_id(gw: Gateway) -> int:
    rows = outbox(gw)
    return rows[-1].id if rows else 0


def signed(gw: Gateway, case: int, owner: str) -> str:
    return f"conduct+{case}-{reply_token(gw.secrets.current, case, owner)}@example.org"


def mail(sender: str, to: str, message_id: str, body: str, subject: str = "Re: x") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
        f"\r\n{body}\r\n"
    ).encode()


def test_a_director_only_case_stays_with_the_director(gw: Gateway) -> None:
    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    first = outbox(gw)
    assert sorted((r.kind, r.recipient) for r in first) == [
        ("acknowledgement", "rita@example.net"),
        ("copy", "ed@example.org"),
    ]
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.director_only
        assert case.escalated_at is not None  # with the director from the start
        recused = {p.address: p.recused for p in session.execute(select(Participant)).scalars()}
    assert recused == {
        "rita@example.net": False,
        "alice@example.org": True,
        "bob@example.org": True,
        "ed@example.org": False,
    }

    # The reporter's reply reaches the director, and no staff member.
    mark = last_id(gw)
    deliver(
        gw,
        mail("rita@example.net", signed(gw, 1, "rita@example.net"), "dir2@example.net", "More."),
        "rita@example.net",
        signed(gw, 1, "rita@example.net"),
    )
    assert [(r.kind, r.recipient) for r in outbox(gw, mark)] == [("copy", "ed@example.org")]

    # A staff member's commands, even through a valid token of theirs, change nothing.
    mark = last_id(gw)
    alice = signed(gw, 1, "alice@example.org")
    deliver(
        gw,
        mail("alice@example.org", alice, "dir3@example.org", "#status investigating"),
        "alice@example.org",
        alice,
    )
    assert outbox(gw, mark) == []
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.status == "new"
        refused = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "command-refused")
        ).scalars()
        assert ['"reason": "director-only"' in (d or "") for d in refused] == [True]

    # The director may command it.
    mark = last_id(gw)
    director = signed(gw, 1, "ed@example.org")
    deliver(
        gw,
        mail("ed@example.org", director, "dir4@example.org", "#status investigating"),
        "ed@example.org",
        director,
    )
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.status == "investigating"
    assert {r.recipient for r in outbox(gw, mark)} == {"ed@example.org"}


def test_reminders_and_the_digest_of_a_director_only_case_never_reach_staff(gw: Gateway) -> None:
    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    mark = last_id(gw)
    assert jobs.tick(gw.now() + timedelta(days=8)) > 0
    sent = outbox(gw, mark)
    assert {r.recipient for r in sent} == {"ed@example.org"}
    mark = last_id(gw)
    jobs.digest(gw.now())
    for row in outbox(gw, mark):
        body = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
        text = body.get_body(("plain",))
        assert text is not None
        assert "#1 " not in text.get_content(), row.recipient


def test_a_report_to_the_director_about_the_director_goes_to_staff(gw: Gateway) -> None:
    raw = REPORT.replace(b"Something happened", b"Erin Director did something")
    deliver(gw, raw, "rita@example.net", "conduct+director@example.org")
    copies = sorted(r.recipient for r in outbox(gw) if r.kind == "copy")
    assert copies == ["alice@example.org", "bob@example.org"]
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert not case.director_only


def test_a_report_naming_everyone_still_reaches_the_director(gw: Gateway) -> None:
    raw = (
        b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\n"
        b"Cc: alice@example.org, bob@example.org, ed@example.org\r\n"
        b"Subject: All of you\r\nMessage-ID: <all1@example.net>\r\n\r\nYou all ignored me.\r\n"
    )
    deliver(gw, raw, "rita@example.net", "conduct@example.org")
    copies = [r for r in outbox(gw) if r.kind == "copy"]
    assert [r.recipient for r in copies] == ["ed@example.org"]
    assert b"names every staff member and you" in (copies[0].raw or b"")
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.director_only
    # A reply goes on reaching the director, never nobody.
    mark = last_id(gw)
    to = signed(gw, 1, "rita@example.net")
    deliver(gw, mail("rita@example.net", to, "all2@example.net", "Still waiting."), None, to)
    assert [r.recipient for r in outbox(gw, mark)] == ["ed@example.org"]


def test_a_report_without_from_is_acknowledged_to_its_envelope_sender(gw: Gateway) -> None:
    raw = (
        b"To: conduct@example.org\r\nSubject: No From here\r\nMessage-ID: <nf1@example.net>\r\n"
        b"\r\nSomething happened.\r\n"
    )
    deliver(gw, raw, "Rita@Example.NET", "conduct@example.org")
    acks = [r for r in outbox(gw) if r.kind == "acknowledgement"]
    assert [(r.recipient, r.envelope_sender) for r in acks] == [("Rita@Example.NET", "")]
    reply_to = email.message_from_bytes(acks[0].raw or b"", policy=email.policy.default)["Reply-To"]
    assert reply_to == signed(gw, 1, "rita@example.net")
    # Their reply to that address joins the case.
    mark = last_id(gw)
    deliver(gw, mail("rita@example.net", reply_to, "nf2@example.net", "More."), None, reply_to)
    with gw.database.transaction() as session:
        assert len(session.execute(select(Case)).scalars().all()) == 1
    assert sorted(r.recipient for r in outbox(gw, mark)) == ["alice@example.org", "bob@example.org"]


def test_a_bounce_on_a_director_only_case_is_told_to_the_director_alone(gw: Gateway) -> None:
    from tests.gateway.test_pipeline import dsn

    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    copy = next(r for r in outbox(gw) if r.recipient == "ed@example.org")
    mark = last_id(gw)
    returned = dsn(copy.envelope_sender, returned=copy.raw or b"")
    deliver(gw, returned, None, copy.envelope_sender)
    notices = [r for r in outbox(gw, mark) if r.kind == "bounce-notice"]
    assert [r.recipient for r in notices] == ["ed@example.org"]


def test_staff_added_later_never_see_a_director_only_case_in_the_digest(gw: Gateway) -> None:
    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    from tests.gateway.test_commands import reconfigure

    reconfigure(gw, "Alice Example <alice@example.org>, bob@example.org, carol@example.org")
    mark = last_id(gw)
    Jobs(lambda: gw.settings, gw.database, gw.secrets).digest(gw.now())
    digests = outbox(gw, mark)
    assert "carol@example.org" in {row.recipient for row in digests}
    for row in digests:
        body = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
        text = body.get_body(("plain",))
        assert text is not None
        assert "About the board" not in text.get_content(), row.recipient
        assert "#1 " not in text.get_content(), row.recipient


def test_staff_added_later_cannot_merge_a_director_only_case_into_theirs(gw: Gateway) -> None:
    """Carol is no recused participant of the director's case (she joined the staff after
    it opened), yet `#merge` would hand her its report and every later mail on it."""
    from tests.gateway.test_commands import NEW_STAFF, reconfigure

    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    other = mail("wendy@example.net", "conduct@example.org", "w1@example.net", "Else.", "Other")
    deliver(gw, other, "wendy@example.net", "conduct@example.org")
    reconfigure(gw, NEW_STAFF)
    mark = last_id(gw)
    carol = signed(gw, 2, "carol@example.org")
    deliver(gw, mail("carol@example.org", carol, "m1@example.org", "#merge 1"), None, carol)
    with gw.database.transaction() as session:
        source = session.get(Case, 1)
        assert source is not None
        assert source.merged_into is None
    [result] = [r for r in outbox(gw, mark) if r.kind == "result"]
    assert result.recipient == "carol@example.org"
    assert b"Nothing was changed" in (result.raw or b"")
    assert b"executive director" in (result.raw or b"")
    # The reporter's next mail still reaches the director alone.
    mark = last_id(gw)
    to = signed(gw, 1, "rita@example.net")
    deliver(gw, mail("rita@example.net", to, "dir5@example.net", "More detail."), None, to)
    assert [(r.kind, r.recipient) for r in outbox(gw, mark)] == [("copy", "ed@example.org")]


def test_the_director_merges_only_cases_escalated_to_them(gw: Gateway) -> None:
    deliver(gw, REPORT, "rita@example.net", "conduct+director@example.org")
    other = mail("wendy@example.net", "conduct@example.org", "w1@example.net", "Else.", "Other")
    deliver(gw, other, "wendy@example.net", "conduct@example.org")
    ed = signed(gw, 1, "ed@example.org")
    deliver(gw, mail("ed@example.org", ed, "m2@example.org", "#merge 2"), None, ed)
    [result] = [r for r in outbox(gw) if r.kind == "result"]
    assert b"not escalated" in (result.raw or b"")
    alice = signed(gw, 2, "alice@example.org")
    deliver(gw, mail("alice@example.org", alice, "m3@example.org", "#escalate"), None, alice)
    ed = signed(gw, 2, "ed@example.org")
    deliver(gw, mail("ed@example.org", ed, "m4@example.org", "#merge 1"), None, ed)
    with gw.database.transaction() as session:
        merged, target = session.get(Case, 1), session.get(Case, 2)
        assert merged is not None
        assert target is not None
        assert (merged.merged_into, target.merged_into) == (2, None)
