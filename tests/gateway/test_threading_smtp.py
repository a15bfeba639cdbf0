"""Threading and the mail the gateway sends (SPEC section 4), end to end: a real `serve`,
mail in through its SMTP listener, mail out to a real aiosmtpd smarthost."""

from __future__ import annotations

import email
import email.message
import email.policy
import json

from tests.gateway.test_end_to_end import OUTBOX_BOUND, Running
from tests.serve_process import cli
from tests.sinks import Received

REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <t-rep1@example.net>\r\n"
    b"Disposition-Notification-To: rita@example.net\r\nReturn-Receipt-To: rita@example.net\r\n"
    b"\r\nSomeone was rude to me after the talk.\r\n"
)


def parse(found: Received) -> email.message.EmailMessage:
    message = email.message_from_bytes(found.data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def to(found: list[Received], recipient: str) -> list[Received]:
    return [m for m in found if m.rcpt_tos == (recipient,)]


def wait_for_count(gateway: Running, recipient: str, count: int) -> list[Received]:
    """What `recipient` got so far, once it is at least `count` mails."""
    found = gateway.smarthost.wait_for(lambda m: len(to(m, recipient)) >= count, OUTBOX_BOUND)
    return to(found, recipient)


def message_id(found: Received) -> str:
    return str(parse(found)["Message-ID"]).strip("<>")


def referenced(found: Received) -> set[str]:
    message = parse(found)
    text = f"{message['In-Reply-To'] or ''} {message['References'] or ''}"
    return {part.strip("<>") for part in text.split()}


def mail(sender: str, to_address: str, mid: str, subject: str, body: str, *head: str) -> bytes:
    lines = [f"From: {sender}", f"To: {to_address}", f"Subject: {subject}", f"Message-ID: <{mid}>"]
    return ("\r\n".join([*lines, *head]) + f"\r\n\r\n{body}\r\n").encode()


def case_json(gateway: Running, number: int) -> dict[str, object]:
    result = cli(gateway.config, "cases", "show", str(number), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert isinstance(shown, dict)
    return shown


def case_numbers(gateway: Running) -> list[int]:
    listed = json.loads(cli(gateway.config, "cases", "list", "--json").stdout)
    return sorted(c["number"] for c in listed)


def test_replies_thread_by_reference_case_address_and_subject_tag(gateway: Running) -> None:
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    [ack] = wait_for_count(gateway, "rita@example.net", 1)
    wait_for_count(gateway, "alice@example.org", 1)
    ack_id = message_id(ack)

    # Rule 2: In-Reply-To names a Message-ID the gateway generated for case 1.
    by_reference = mail(
        "rita@example.net",
        "conduct@example.org",
        "t-rep2@example.net",
        "Re: A message from the Conduct team",
        "Something I forgot.",
        f"In-Reply-To: <{ack_id}>",
    )
    gateway.send("rita@example.net", ["conduct@example.org"], by_reference)
    wait_for_count(gateway, "alice@example.org", 2)
    # Rule 3: the case address, from a participant.
    by_address = mail(
        "rita@example.net", "conduct+1@example.org", "t-rep3@example.net", "More", "x"
    )
    gateway.send("rita@example.net", ["conduct+1@example.org"], by_address)
    wait_for_count(gateway, "alice@example.org", 3)
    # Rule 3: the Subject tag after a Re: prefix, from a participant.
    by_tag = mail(
        "rita@example.net", "conduct@example.org", "t-rep4@example.net", "Re: [Conduct #1] y", "y"
    )
    gateway.send("rita@example.net", ["conduct@example.org"], by_tag)
    wait_for_count(gateway, "bob@example.org", 4)
    found = gateway.smarthost.messages

    assert case_numbers(gateway) == [1]
    rules = {m["message_id"]: m["rule"] for m in case_json(gateway, 1)["messages"]}  # type: ignore[attr-defined]
    assert rules["t-rep1@example.net"] == "new-case"
    assert rules["t-rep2@example.net"] == "reference"
    assert rules["t-rep3@example.net"] == "case-address"
    assert rules["t-rep4@example.net"] == "subject-tag"
    # Mail that joins a case gets no acknowledgement.
    assert len(to(found, "rita@example.net")) == 1


def test_each_participant_has_a_thread_of_their_own(gateway: Running) -> None:
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    wait_for_count(gateway, "bob@example.org", 1)
    [copy] = wait_for_count(gateway, "alice@example.org", 1)
    reply_to = str(parse(copy)["Reply-To"])
    command = mail(
        "Alice Example <alice@example.org>",
        reply_to,
        "t-cmd1@example.org",
        "Re: [Conduct #1] Harassment at the meetup",
        "#reply\r\n\r\nThank you for telling us; we are looking into it.",
    )
    gateway.send("alice@example.org", [reply_to], command)
    found = gateway.smarthost.wait_for(
        lambda m: len(to(m, "rita@example.net")) >= 2 and len(to(m, "bob@example.org")) >= 2,
        OUTBOX_BOUND,
    )
    by_recipient: dict[str, set[str]] = {}
    for sent in found:
        by_recipient.setdefault(sent.rcpt_tos[0], set()).add(message_id(sent))
    their_own = {
        "rita@example.net": {"t-rep1@example.net"},
        "alice@example.org": {"t-rep1@example.net", "t-cmd1@example.org"},
        "bob@example.org": {"t-rep1@example.net"},
    }
    for sent in found:
        recipient = sent.rcpt_tos[0]
        others = set().union(*(ids for r, ids in by_recipient.items() if r != recipient))
        allowed = by_recipient[recipient] | their_own.get(recipient, set())
        refs = referenced(sent)
        assert not refs & (others - allowed), (recipient, refs)
        assert refs <= allowed, (recipient, refs)
        # Read-receipt requests are never copied onto mail the gateway sends.
        assert parse(sent)["Disposition-Notification-To"] is None
        assert parse(sent)["Return-Receipt-To"] is None
    [_ack, reply] = to(found, "rita@example.net")
    text = reply.data.decode()
    assert "looking into it" in text
    assert "alice" not in text.lower()  # no trace of the staff member
    # A staff copy references the message it carries.
    assert "t-rep1@example.net" in referenced(copy)


def test_an_outsider_guessing_a_case_number_learns_nothing_of_it(gateway: Running) -> None:
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    first = wait_for_count(gateway, "alice@example.org", 1)
    case_one_ids = {message_id(m) for m in first} | {"t-rep1@example.net"}
    guess = mail(
        "Mallory <mallory@example.com>",
        "conduct+1@example.org",
        "t-mal1@example.com",
        "Re: [Conduct #1] what is this?",
        "Tell me about case 1.",
        "In-Reply-To: <t-rep1@example.net>",
    )
    gateway.send("mallory@example.com", ["conduct+1@example.org"], guess)
    found = gateway.smarthost.wait_for(
        lambda m: len(to(m, "mallory@example.com")) >= 1 and len(to(m, "alice@example.org")) >= 2,
        OUTBOX_BOUND,
    )
    assert case_numbers(gateway) == [1, 2]
    staff_copy = to(found, "alice@example.org")[1]
    assert str(parse(staff_copy)["Subject"]).startswith("[Conduct #2] ")
    assert b"possibly related to #1" in staff_copy.data
    [answer] = to(found, "mallory@example.com")
    assert str(parse(answer)["Subject"]) == "[Conduct #2] A message from the Conduct team"
    assert not referenced(answer) & case_one_ids
    for secret in (b"Harassment", b"rude", b"rita", b"#1", b"t-rep1"):
        assert secret not in answer.data, secret
    participants = {p["address"] for p in case_json(gateway, 1)["participants"]}  # type: ignore[attr-defined]
    assert "mallory@example.com" not in participants


def test_html_only_attachments_and_urgent_reports_reach_staff_whole(gateway: Running) -> None:
    html = (
        b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: Seen at the bar\r\n"
        b"Message-ID: <t-html1@example.net>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>He <b>shouted</b> at a volunteer.</p></body></html>\r\n"
    )
    gateway.send("rita@example.net", ["conduct@example.org"], html)
    [copy] = wait_for_count(gateway, "alice@example.org", 1)
    body = parse(copy).get_body(("plain",))
    assert body is not None
    assert "shouted" in body.get_content()
    assert "<b>" not in body.get_content()

    attached = (
        b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: Evidence\r\n"
        b"Message-ID: <t-att1@example.net>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nThe screenshot is attached.\r\n"
        b"--XX\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="evidence.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--XX--\r\n"
    )
    gateway.send("rita@example.net", ["conduct@example.org"], attached)
    copies = wait_for_count(gateway, "alice@example.org", 2)
    staff_copy = parse(copies[1])
    [original] = [p for p in staff_copy.walk() if p.get_content_type() == "message/rfc822"]
    inner = original.get_content()
    assert inner["Message-ID"] == "<t-att1@example.net>"
    names = [p.get_filename() for p in inner.walk() if p.get_filename()]
    assert names == ["evidence.pdf"]
    assert attached.split(b"\r\n\r\n", 1)[1] in copies[1].data  # the body byte for byte

    urgent = mail(
        "rita@example.net",
        "conduct@example.org",
        "t-urg1@example.net",
        "Please help",
        "He threatened to hurt me at the venue tonight.",
    )
    gateway.send("rita@example.net", ["conduct@example.org"], urgent)
    [director] = wait_for_count(gateway, "ed@example.org", 1)
    assert b"t-urg1@example.net" in director.data
    assert b"URGENT" in director.data
