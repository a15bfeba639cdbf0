"""The inbox pipeline on both backends: cases, outbox rows, quarantine, bounces, postmaster."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from sqlalchemy import select

from gateway.pipeline import Pipeline
from storage import inbox
from storage.models import Case, InboxEntry, Message, OutboxEntry, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway

REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <rep1@example.net>\r\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nSomeone was rude to me at the talk.\r\n"
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def store(
    gw: Gateway,
    raw: bytes,
    sender: str | None = "rita@example.net",
    recipients: tuple[str, ...] = ("conduct@example.org",),
) -> int:
    with gw.database.transaction() as session:
        return inbox.store(
            session,
            raw=raw,
            envelope_sender=sender,
            recipients=recipients,
            source="smtp",
            now=gw.now(),
        ).id


def run(gw: Gateway) -> Pipeline:
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass
    return pipeline


def outbox_rows(gw: Gateway) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars())


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_a_report_becomes_case_1_with_an_acknowledgement_and_staff_copies(gw: Gateway) -> None:
    store(gw, REPORT)
    run(gw)
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.status == "new"
        roles = {p.address: p.role for p in session.execute(select(Participant)).scalars()}
    assert roles == {
        "rita@example.net": "reporter",
        "alice@example.org": "staff",
        "bob@example.org": "staff",
    }
    rows = outbox_rows(gw)
    assert sorted((r.kind, r.recipient) for r in rows) == [
        ("acknowledgement", "rita@example.net"),
        ("copy", "alice@example.org"),
        ("copy", "bob@example.org"),
    ]
    ack = next(r for r in rows if r.kind == "acknowledgement")
    assert ack.envelope_sender == ""
    message = parse(ack.raw or b"")
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["Subject"] == "[Conduct #1] A message from the Conduct team"
    assert message["References"] == "<rep1@example.net>"
    assert message["Reply-To"].startswith("conduct+1-")
    assert "rude" not in (ack.raw or b"").decode()
    copy = next(r for r in rows if r.recipient == "alice@example.org")
    assert copy.envelope_sender.startswith("conduct+bounce-")
    staff_copy = parse(copy.raw or b"")
    assert staff_copy["From"] == "Rita Reporter via Conduct <conduct@example.org>"
    assert staff_copy["Subject"] == "[Conduct #1] Harassment at the meetup"
    assert staff_copy["Cc"] is None
    attached = [p for p in staff_copy.walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert REPORT.split(b"\r\n\r\n")[1] in (copy.raw or b"")


def test_every_reply_address_is_the_recipient_s_own(gw: Gateway) -> None:
    from rules.tokens import reply_token

    store(gw, REPORT)
    run(gw)
    for row in outbox_rows(gw):
        reply_to = parse(row.raw or b"")["Reply-To"]
        token = reply_token(gw.secrets.current, 1, row.recipient)
        assert reply_to == f"conduct+1-{token}@example.org"


def test_a_reply_from_the_reporter_joins_the_case_and_reaches_staff(gw: Gateway) -> None:
    store(gw, REPORT)
    run(gw)
    ack = next(r for r in outbox_rows(gw) if r.kind == "acknowledgement")
    reply_to = parse(ack.raw or b"")["Reply-To"]
    reply = (
        b"From: rita@example.net\r\nTo: "
        + str(reply_to).encode()
        + b"\r\nSubject: Re: A message\r\nMessage-ID: <rep2@example.net>\r\n\r\nMore details.\r\n"
    )
    store(gw, reply, recipients=(str(reply_to),))
    run(gw)
    with gw.database.transaction() as session:
        assert session.execute(select(Case)).scalars().all()[-1].number == 1
        rule = session.execute(
            select(Message.rule).where(Message.message_id == "rep2@example.net")
        ).scalar_one()
    assert rule == "signed-address"
    later = [r for r in outbox_rows(gw) if r.kind == "copy"][2:]
    assert sorted(r.recipient for r in later) == ["alice@example.org", "bob@example.org"]


def signed(gw: Gateway, case: int, owner: str) -> str:
    from rules.tokens import reply_token

    return f"conduct+{case}-{reply_token(gw.secrets.current, case, owner)}@example.org"


def test_the_acknowledgement_s_reply_to_is_signed_for_the_envelope_sender_it_goes_to(
    gw: Gateway,
) -> None:
    """A forged From of a staff member must not buy the envelope sender that staff member's
    signed address: with `require_dkim = no` it would let them command as her."""
    forged = REPORT.replace(
        b"Rita Reporter <rita@example.net>", b"Alice Example <alice@example.org>"
    )
    store(gw, forged, sender="Mallory@Evil.example")
    run(gw)
    [ack] = [r for r in outbox_rows(gw) if r.kind == "acknowledgement"]
    assert ack.recipient == "Mallory@Evil.example"
    reply_to = str(parse(ack.raw or b"")["Reply-To"])
    assert reply_to == signed(gw, 1, "mallory@evil.example")
    assert reply_to != signed(gw, 1, "alice@example.org")
    with gw.database.transaction() as session:
        reporter = session.execute(
            select(Participant.address).where(Participant.role == "reporter")
        ).scalar_one()
    assert reporter == "alice@example.org"  # the reporter is still the From
    command = (
        f"From: alice@example.org\r\nTo: {reply_to}\r\nSubject: x\r\n"
        "Message-ID: <forged2@evil.example>\r\n\r\n#status resolved\r\n"
    ).encode()
    store(gw, command, sender="mallory@evil.example", recipients=(reply_to,))
    run(gw)
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.status == "new"


def test_a_reporter_behind_a_forwarder_threads_their_reply_by_reference(gw: Gateway) -> None:
    """An SRS forwarder rewrites the envelope sender: the acknowledgement goes there, signed
    for that address, and the reporter's reply from their own address, answering it, still
    joins the case by its References (SPEC section 4, rule 2)."""
    forwarder = "SRS0=HHH=TT=example.net=rita@forwarder.example"
    store(gw, REPORT, sender=forwarder)
    run(gw)
    [ack] = [r for r in outbox_rows(gw) if r.kind == "acknowledgement"]
    assert ack.recipient == forwarder
    assert parse(ack.raw or b"")["Reply-To"] == signed(gw, 1, forwarder.lower())
    reply = (
        b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
        b"Subject: Re: A message\r\nMessage-ID: <fwd2@example.net>\r\n"
        b"In-Reply-To: <" + ack.message_id.encode() + b">\r\n\r\nMore details.\r\n"
    )
    store(gw, reply, sender=forwarder)
    run(gw)
    with gw.database.transaction() as session:
        assert [c.number for c in session.execute(select(Case)).scalars()] == [1]
        rule = session.execute(
            select(Message.rule).where(Message.message_id == "fwd2@example.net")
        ).scalar_one()
        roles = {p.address: p.role for p in session.execute(select(Participant)).scalars()}
    assert rule == "reference"
    assert roles["rita@example.net"] == "reporter"
    assert forwarder.lower() not in roles
    later = [r for r in outbox_rows(gw) if r.kind == "copy"][2:]
    assert sorted(r.recipient for r in later) == ["alice@example.org", "bob@example.org"]


def test_the_same_message_twice_makes_one_case(gw: Gateway) -> None:
    store(gw, REPORT)
    store(gw, REPORT)
    run(gw)
    with gw.database.transaction() as session:
        assert len(session.execute(select(Case)).scalars().all()) == 1


def test_a_message_whose_handling_fails_is_quarantined_and_others_go_on(gw: Gateway) -> None:
    bad = store(gw, REPORT)
    good = store(gw, REPORT.replace(b"rep1@", b"rep9@"))
    real = __import__("gateway.processing", fromlist=["process"]).process
    calls = {"n": 0}

    def fail_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("handler bug")
        return real(*args, **kwargs)

    with mock.patch("gateway.pipeline.process", side_effect=fail_first):
        pipeline = run(gw)
    assert pipeline.quarantined == 1
    with gw.database.transaction() as session:
        bad_row = session.get(InboxEntry, bad)
        good_row = session.get(InboxEntry, good)
        assert bad_row is not None
        assert good_row is not None
        assert bad_row.state == "failed"
        assert "RuntimeError" in (bad_row.last_error or "")
        assert bad_row.raw == REPORT
        assert good_row.state == "done"
        # Retried after its back-off: processed then, and never lost meanwhile.
        bad_row.next_attempt_at = gw.now()
    run(gw)
    with gw.database.transaction() as session:
        assert session.get(InboxEntry, bad).state == "done"  # type: ignore[union-attr]
        assert len(session.execute(select(Case)).scalars().all()) == 2


def test_a_dsn_to_a_bounce_address_marks_the_mail_failed_and_tells_staff(gw: Gateway) -> None:
    store(gw, REPORT)
    run(gw)
    ack = next(r for r in outbox_rows(gw) if r.recipient == "alice@example.org")
    dsn = (
        b"From: MAILER-DAEMON@mx.example.org\r\nTo: "
        + ack.envelope_sender.encode()
        + b"\r\nSubject: Undelivered Mail\r\nMessage-ID: <dsn1@mx>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; alice@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"\r\n--B--\r\n"
    )
    store(gw, dsn, sender=None, recipients=(ack.envelope_sender,))
    run(gw)
    rows = outbox_rows(gw)
    failed = next(r for r in rows if r.id == ack.id)
    assert failed.state == "failed"
    notices = [r for r in rows if r.kind == "bounce-notice"]
    assert sorted(r.recipient for r in notices) == ["alice@example.org", "bob@example.org"]
    with gw.database.transaction() as session:
        assert len(session.execute(select(Case)).scalars().all()) == 1


def dsn(
    to: str,
    *,
    action: str = "failed",
    returned: bytes = b"",
    message_id: str = "dsn2@mx",
) -> bytes:
    """A Postfix-like DSN; `returned` is the full mail it returns (RET=FULL)."""
    parts = (
        b"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; someone@example.org\r\nAction: " + action.encode() + b"\r\n"
        b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <someone@example.org>: no such user"
        b"\r\n\r\n"
    )
    if returned:
        parts += b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + returned + b"\r\n"
    return (
        b"From: MAILER-DAEMON@mx.example.org\r\nTo: " + to.encode() + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <"
        + message_id.encode()
        + b">\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        + parts
        + b"--B--\r\n"
    )


def cases_count(gw: Gateway) -> int:
    with gw.database.transaction() as session:
        return len(session.execute(select(Case)).scalars().all())


def test_mail_to_an_unknown_bounce_id_is_handled_as_conduct_mail(gw: Gateway) -> None:
    # SPEC section 3: an unknown bounce ID is mail to the conduct address (here a report
    # with a null sender: a case, no acknowledgement), revealing nothing about bounce IDs.
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\r\nTo: conduct+bounce-zzzz@example.org\r\n"
        b"Subject: Undelivered\r\nMessage-ID: <ub1@mx>\r\n\r\nfailed\r\n"
    )
    store(gw, raw, sender=None, recipients=("conduct+bounce-zzzz@example.org",))
    run(gw)
    assert cases_count(gw) == 1
    assert sorted((r.kind, r.recipient) for r in outbox_rows(gw)) == [
        ("copy", "alice@example.org"),
        ("copy", "bob@example.org"),
    ]


def test_a_dsn_to_an_unknown_bounce_id_is_kept_unfiled(gw: Gateway) -> None:
    store(
        gw,
        dsn("conduct+bounce-zzzz@example.org"),
        sender=None,
        recipients=("conduct+bounce-zzzz@example.org",),
    )
    run(gw)
    assert outbox_rows(gw) == []
    assert cases_count(gw) == 0
    with gw.database.transaction() as session:
        kinds = session.execute(select(Message.kind).where(Message.case_number.is_(None)))
        assert list(kinds.scalars()) == ["bounce"]


def test_an_out_of_office_reply_to_a_bounce_address_marks_nothing(gw: Gateway) -> None:
    store(gw, REPORT)
    run(gw)
    copy = next(r for r in outbox_rows(gw) if r.recipient == "alice@example.org")
    before = {r.id: r.state for r in outbox_rows(gw)}
    vacation = (
        b"From: Alice Example <alice@example.org>\r\nTo: "
        + copy.envelope_sender.encode()
        + b"\r\nSubject: Out of office: [Conduct #1] Harassment at the meetup\r\n"
        b"Auto-Submitted: auto-replied\r\nMessage-ID: <ooo1@example.org>\r\n\r\n"
        b"I am away until Monday.\r\n"
    )
    store(gw, vacation, sender=copy.envelope_sender, recipients=(copy.envelope_sender,))
    # A DSN about mail that was only delayed is no failure either.
    store(
        gw,
        dsn(copy.envelope_sender, action="delayed"),
        sender=None,
        recipients=(copy.envelope_sender,),
    )
    run(gw)
    rows = outbox_rows(gw)
    assert {r.id: r.state for r in rows} == before  # nothing failed, no notice queued
    assert cases_count(gw) == 1
    with gw.database.transaction() as session:
        unfiled = session.execute(
            select(Message.kind).where(Message.case_number.is_(None)).order_by(Message.id)
        ).scalars()
        assert list(unfiled) == ["auto-reply", "bounce"]


def test_bounce_notices_skip_recused_staff_and_never_carry_the_dsn(gw: Gateway) -> None:
    about_bob = REPORT.replace(b"Someone was rude", b"bob@example.org was rude")
    store(gw, about_bob)
    run(gw)
    director_copy = next(r for r in outbox_rows(gw) if r.recipient == "ed@example.org")
    returned = director_copy.raw or b""
    assert b"bob@example.org was rude" in returned
    store(
        gw,
        dsn(director_copy.envelope_sender, returned=returned),
        sender=None,
        recipients=(director_copy.envelope_sender,),
    )
    run(gw)
    rows = outbox_rows(gw)
    assert next(r for r in rows if r.id == director_copy.id).state == "failed"
    notices = [r for r in rows if r.kind == "bounce-notice"]
    assert [r.recipient for r in notices] == ["alice@example.org"]  # bob is recused
    notice = parse(notices[0].raw or b"")
    assert notice["Subject"] == "Undeliverable: mail on case #1"
    assert [p.get_content_type() for p in notice.walk() if p.is_attachment()] == []
    text = (notices[0].raw or b"").decode()
    assert "rude" not in text
    assert "5.1.1" in text
    assert "no such user" in text
    assert "ed@example.org" in text  # which recipient failed


def test_postmaster_mail_goes_to_the_configured_postmaster(gw: Gateway) -> None:
    store(
        gw,
        b"From: someone@example.com\r\nSubject: your server\r\n\r\nhello\r\n",
        sender="someone@example.com",
        recipients=("postmaster@example.org",),
    )
    run(gw)
    rows = outbox_rows(gw)
    assert [(r.kind, r.recipient) for r in rows] == [("copy", "hostmaster@example.org")]
    with gw.database.transaction() as session:
        assert session.execute(select(Case)).scalars().all() == []


def test_every_message_kind_in_a_case_is_one_of_spec_s(gw: Gateway) -> None:
    from handlers.effects import MESSAGE_KINDS
    from storage import case_records

    store(gw, REPORT)
    run(gw)
    with gw.database.transaction() as session:
        detail = case_records.detail(session, 1)
    assert detail is not None
    kinds = {m.kind for m in detail.messages}
    assert kinds <= MESSAGE_KINDS
    assert {"report", "auto-reply", "notification"} <= kinds
