"""Issue 10's checklist, the items no other test held: rate-limit exemptions, bounce notices to
who caused the mail, refusals in the digest, no attachments out, bad tokens, status by command."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.cli import main
from gateway.reminder_jobs import Jobs
from storage import audit
from storage.models import AuditEvent, Case, Message, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_commands import REPORT, body_of, case, command, mails, run, signed, store
from tests.gateway.test_pipeline import dsn

MODERATORS = "[moderators]\ndev@lists.example.org = Carol@Example.org\n"


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    """Case 1, reported by rita; carol moderates dev@."""
    gateway = make_gateway(tmp_path, database_url, extra=MODERATORS)
    store(gateway, REPORT, "rita@example.net", ("conduct@example.org",))
    run(gateway)
    yield gateway
    gateway.database.dispose()


def parse(raw: bytes | None) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw or b"", policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def audit_actions(gw: Gateway) -> list[str]:
    with gw.database.transaction() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


# SPEC 4: mail to staff, the executive director and moderators is never rate-limited.


def test_acknowledgements_to_staff_the_director_and_moderators_are_never_rate_limited(
    gw: Gateway,
) -> None:
    senders = {
        "alice@example.org": "Alice Example <alice@example.org>",
        "ed@example.org": "Erin Director <ed@example.org>",
        "carol@example.org": "Carol <carol@example.org>",
        "stranger@example.net": "A Stranger <stranger@example.net>",
    }
    for n in range(6):
        for address, written in senders.items():
            raw = (
                f"From: {written}\r\nTo: conduct@example.org\r\nSubject: Report {n} of {address}"
                f"\r\nMessage-ID: <rl-{n}-{address}>\r\n\r\nSomething else happened ({n}).\r\n"
            ).encode()
            store(gw, raw, address.upper(), ("conduct@example.org",))
    run(gw)
    acks = [m.recipient.lower() for m in mails(gw, "acknowledgement")]
    assert {a: acks.count(a) for a in senders} == {
        "alice@example.org": 6,
        "ed@example.org": 6,
        "carol@example.org": 6,
        "stranger@example.net": 5,  # the limit still holds for everyone else
    }
    assert audit_actions(gw).count("acknowledgement-rate-limited") == 1


# SPEC 3: a DSN to a bounce address tells the staff member who caused the mail.


def test_a_bounced_reply_is_told_to_the_staff_member_who_sent_it_alone(gw: Gateway) -> None:
    command(gw, "#reply\r\nThank you, we are looking into it.\r\n")
    [reply] = mails(gw, "reply")
    assert reply.envelope_sender.startswith("conduct+bounce-")
    store(gw, dsn(reply.envelope_sender), None, (reply.envelope_sender,))
    run(gw)
    rows = mails(gw)
    assert next(r for r in rows if r.id == reply.id).state == "failed"
    assert [r.recipient for r in rows if r.kind == "bounce-notice"] == ["alice@example.org"]


# SPEC 5: refused, unauthorised command mail is listed in the digest.


def test_forged_and_unauthorised_commands_are_counted_in_the_digest(gw: Gateway) -> None:
    before = len(mails(gw))
    # alice, with the reporter's token, and a stranger through conduct+moderate@.
    command(gw, "#status resolved\r\n", token_of="rita@example.net")
    stranger = (
        b"From: stranger@example.net\r\nTo: conduct+moderate@example.org\r\n"
        b"Subject: ban\r\nMessage-ID: <mod-stranger@example.net>\r\n\r\n"
        b"#ban rita@example.net list=dev@lists.example.org\r\n"
    )
    store(gw, stranger, "stranger@example.net", ("conduct+moderate@example.org",))
    run(gw)
    assert len(mails(gw)) == before  # neither gets a reply
    assert case(gw).status == "new"
    actions = audit_actions(gw)
    assert (actions.count("command-refused"), actions.count("moderation-refused")) == (1, 1)
    Jobs(lambda: gw.settings, gw.database, gw.secrets).digest(gw.now())
    digests = [m for m in mails(gw, "reminder") if "daily digest" in parse(m.raw)["Subject"]]
    assert sorted(m.recipient for m in digests) == ["alice@example.org", "bob@example.org"]
    text = body_of(digests[0])
    assert "Refused commands (last day):         2" in text
    # The link the digest carries is the one `audit verify` computes.
    verified = CliRunner().invoke(main, ["audit", "verify", "-c", str(gw.path)])
    assert verified.exit_code == 0, verified.output
    found = re.search(r"latest link ([0-9a-f]{64})", text)
    assert found is not None
    assert f"latest link {found.group(1)}" in verified.output
    with gw.database.transaction() as session:
        assert audit.verify_chain(session).latest_link == found.group(1)


# SPEC 5: what #reply sends never carries attachments.

PDF = b"%PDF-1.4\n1 0 obj << /Title (Witness statement of Mallory) >> endobj\n%%EOF\n" * 20


def test_a_reply_with_an_attachment_sends_the_text_alone(gw: Gateway) -> None:
    encoded = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    address = signed(gw, 1, "alice@example.org")
    raw = (
        b"From: alice@example.org\r\nTo: " + address.encode() + b"\r\n"
        b"Subject: Re: [Conduct #1] report\r\nMessage-ID: <att1@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"#reply\r\nWe have read the statement and will be in touch.\r\n"
        b"--XX\r\nContent-Type: application/pdf; name=statement.pdf\r\n"
        b"Content-Disposition: attachment; filename=statement.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--XX--\r\n"
    )
    store(gw, raw, "alice@example.org", (address,))
    run(gw)
    [reply] = mails(gw, "reply")
    assert reply.recipient == "rita@example.net"
    sent = reply.raw or b""
    message = parse(sent)
    assert [p.get_content_type() for p in message.walk() if not p.is_multipart()] == ["text/plain"]
    assert not [p for p in message.walk() if p.is_attachment()]
    assert "We have read the statement" in body_of(reply)
    for trace in (b"statement.pdf", b"application/pdf", b"%PDF", b"Witness statement"):
        assert trace not in sent, trace
    for line in encoded.split(b"\r\n")[:5]:
        assert line not in sent


# SPEC 3: an invalid token is plain mail to the conduct address, revealing nothing.


def test_an_outsider_s_invalid_token_opens_a_new_case_and_learns_nothing_of_case_1(
    gw: Gateway,
) -> None:
    with gw.database.transaction() as session:
        filed = session.execute(select(Message.id).where(Message.case_number == 1)).all()
    raw = (
        b"From: Oscar Outsider <oscar@example.com>\r\nTo: conduct+1-badtoken@example.org\r\n"
        b"Subject: Re: [Conduct #1] Harassment at the meetup\r\n"
        b"Message-ID: <bad-token@example.com>\r\n\r\nWhat happened at the meetup?\r\n"
    )
    store(gw, raw, "oscar@example.com", ("conduct+1-badtoken@example.org",))
    run(gw)
    second = case(gw, 2)
    assert second.possibly_related in (1, None)
    with gw.database.transaction() as session:
        on_1 = session.execute(select(Message.id).where(Message.case_number == 1)).all()
        people = session.execute(
            select(Participant.case_number, Participant.role).where(
                Participant.address == "oscar@example.com"
            )
        ).all()
    assert on_1 == filed  # nothing joined case 1
    assert people == [(2, "reporter")]
    to_oscar = [m for m in mails(gw) if m.recipient == "oscar@example.com"]
    assert [m.kind for m in to_oscar] == ["acknowledgement"]
    sent = to_oscar[0].raw or b""
    assert b"#2" in sent
    for trace in (b"Conduct #1", b"rita", b"Rita", b"Mallory", b"rude"):
        assert trace not in sent, trace
    assert parse(sent)["Reply-To"] == signed(gw, 2, "oscar@example.com")


# SPEC 5: status changes only through #status and #close.


def correspond(gw: Gateway, sender: str, text: str, n: int) -> None:
    address = signed(gw, 1, sender)
    raw = (
        f"From: {sender}\r\nTo: {address}\r\nSubject: Re: [Conduct #1] report\r\n"
        f"Message-ID: <st-{n}@example.org>\r\n\r\n{text}\r\n"
    ).encode()
    store(gw, raw, sender, (address,))
    run(gw)


@pytest.mark.parametrize("set_by", ["#status waiting", "#close resolved"])
def test_correspondence_and_notes_never_change_the_status(gw: Gateway, set_by: str) -> None:
    command(gw, f"{set_by}\r\n")
    status = "waiting" if "waiting" in set_by else "closed"
    assert case(gw).status == status
    before = len(mails(gw, "correspondence")) + len(mails(gw, "copy"))
    correspond(gw, "rita@example.net", "Is there any news? Please reopen this.", 1)
    correspond(gw, "bob@example.org", "Noting that the reporter wrote again.", 2)
    assert case(gw).status == status
    with gw.database.transaction() as session:
        kinds = session.execute(
            select(Message.kind)
            .where(Message.case_number == 1, Message.direction == "in")
            .order_by(Message.id)
        ).scalars()
        assert list(kinds)[-2:] == ["correspondence", "note"]  # both joined case 1
    assert len(mails(gw, "correspondence")) + len(mails(gw, "copy")) > before
    with gw.database.transaction() as session:
        row = session.get(Case, 1)
        assert row is not None
        assert row.status == status
