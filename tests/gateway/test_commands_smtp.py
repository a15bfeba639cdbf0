"""Staff commands end to end: a real `serve`, its SMTP ingress, pipeline and sender, with an
aiosmtpd smarthost sink: a report, a staff #reply, the spoof matrix, a moderator's round-trip."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import time
from email.message import EmailMessage

from rules.tokens import reply_token
from tests.gateway.test_end_to_end import OUTBOX_BOUND, Running
from tests.serve_process import cli
from tests.sinks import Received

# Processing (5 s) then delivery (5 s), SPEC section 2, with slack.
BOUND = 2 * OUTBOX_BOUND
SECRET = b"s" * 32  # what test_end_to_end.start writes
REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <smtp-rep1@example.net>\r\n"
    b"\r\nSomeone was rude to me after the talk.\r\n"
)


def parsed(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def to(received: list[Received], address: str) -> list[Received]:
    return [m for m in received if m.rcpt_tos == (address,)]


def wait_to(gateway: Running, address: str, count: int) -> list[Received]:
    found = gateway.smarthost.wait_for(lambda m: len(to(m, address)) >= count, BOUND)
    return to(found, address)


def mail(sender: str, recipient: str, body: str, message_id: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: {recipient}\r\n{extra}Subject: Re: [Conduct #1] report\r\n"
        f"Message-ID: <{message_id}>\r\n\r\n{body}"
    ).encode()


def case_json(gateway: Running, number: int) -> dict[str, object]:
    shown = cli(gateway.config, "cases", "show", str(number), "--json")
    assert shown.returncode == 0, shown.stderr
    result: dict[str, object] = json.loads(shown.stdout)
    return result


def refusals(gateway: Running) -> int:
    """command-refused events across cases 1 and 2 (and unfiled ones are not in a case)."""
    events = [e for n in (1, 2) for e in case_json(gateway, n)["events"]]  # type: ignore[attr-defined]
    return sum(1 for e in events if e["action"] == "command-refused")


def opened(gateway: Running) -> tuple[str, str]:
    """Case 1 by SMTP; returns (alice's signed address, rita's signed address)."""
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    [copy] = wait_to(gateway, "alice@example.org", 1)
    [ack] = wait_to(gateway, "rita@example.net", 1)
    return str(parsed(copy)["Reply-To"]), str(parsed(ack)["Reply-To"])


def test_a_staff_reply_by_smtp_reaches_the_reporter_with_no_trace_of_staff(
    gateway: Running,
) -> None:
    alice_address, _rita_address = opened(gateway)
    token = alice_address.split("+", 1)[1].split("@", 1)[0].split("-", 1)[1]
    body = (
        "#reply\r\nThank you, we are looking into what happened.\r\n\r\n"
        "-- \r\nAlice Example\r\nConduct team lead, +1 555 0100\r\n"
    )
    gateway.send(
        "alice@example.org",
        [alice_address],
        mail("Alice Example <alice@example.org>", alice_address, body, "smtp-cmd1@example.org"),
    )
    [_ack, reply] = wait_to(gateway, "rita@example.net", 2)
    [result] = [m for m in wait_to(gateway, "alice@example.org", 2) if m.mail_from in ("", "<>")]
    raw = reply.data.lower()
    for trace in (
        b"alice",  # name, local part and address
        b"alice example",
        b"alice@example.org",
        token.lower().encode(),
        b"555 0100",  # her signature
        b"team lead",
        b"smtp-cmd1",  # her Message-ID
    ):
        assert trace not in raw, trace
    text = parsed(reply).get_body(("plain",))
    assert text is not None
    assert "Thank you, we are looking into what happened." in str(text.get_content())
    assert parsed(reply)["From"] == "Conduct <conduct@example.org>"
    assert b"Thank you, we are looking into what happened." in result.data


def test_forged_commands_by_smtp_change_nothing_and_get_no_reply(gateway: Running) -> None:
    alice_address, rita_address = opened(gateway)
    # Mallory opens case 2 herself, so she holds a real token (her own, for case 2).
    mallory_report = REPORT.replace(b"Rita Reporter <rita@", b"Mallory <mallory@").replace(
        b"smtp-rep1", b"smtp-rep2"
    )
    gateway.send("mallory@example.com", ["conduct@example.org"], mallory_report)
    [mallory_ack] = wait_to(gateway, "mallory@example.com", 1)
    mallory_address = str(parsed(mallory_ack)["Reply-To"])
    bob_token = reply_token(SECRET, 1, "bob@example.org")
    bob_address = f"conduct+1-{bob_token}@example.org"
    commands = "#status resolved\r\n#urgent\r\n#close no-violation\r\n"
    before = len(gateway.smarthost.messages)
    forged = [
        # (From, To, extra headers)
        ("alice@example.org", "conduct+1@example.org", ""),  # no token
        ("alice@example.org", mallory_address, ""),  # another case's token
        ("alice@example.org", bob_address, ""),  # another staff member's token
        ("alice@example.org", rita_address, ""),  # the reporter's token
        ("mallory@example.com", alice_address, "Reply-To: alice@example.org\r\n"),
    ]
    for n, (sender, recipient, extra) in enumerate(forged):
        gateway.send(sender, [recipient], mail(sender, recipient, commands, f"f{n}@x", extra))
    # The four forged From: alice are refused and recorded; wait until all are processed.
    deadline = time.monotonic() + BOUND
    while refusals(gateway) < 4:
        assert time.monotonic() < deadline, "forged commands not all recorded as refused"
        time.sleep(0.5)
    time.sleep(OUTBOX_BOUND / 2)  # anything owed would be with the sink by now
    for number in (1, 2):
        shown = case_json(gateway, number)
        assert (shown["status"], shown["urgent"], shown["outcome"]) == ("new", False, None)
    later = gateway.smarthost.messages[before:]
    # Nobody is answered: no result mail at all, nothing to the forged senders.
    assert [m for m in later if m.mail_from in ("", "<>")] == []
    assert to(later, "mallory@example.com") == []
    # Mallory's mail to alice's address is only a stranger's correspondence for staff.
    assert all(m.rcpt_tos[0] in ("alice@example.org", "bob@example.org") for m in later)


def test_a_moderator_s_ban_by_email_refuses_the_next_post(gateway: Running) -> None:
    moderate = "conduct+moderate@example.org"
    gateway.send(
        "carol@example.org",
        [moderate],
        mail("carol@example.org", moderate, "#ban spammer@bad.example\r\n", "mod1@x"),
    )
    [ask] = wait_to(gateway, "carol@example.org", 1)
    assert ask.mail_from in ("", "<>")
    confirm = str(parsed(ask)["Reply-To"])
    assert confirm.startswith("conduct+confirm-")
    assert json.loads(cli(gateway.config, "bans", "list", "--json").stdout) == []
    gateway.send(
        "carol@example.org", [confirm], mail("carol@example.org", confirm, "ok\r\n", "c1@x")
    )
    [_ask, done] = wait_to(gateway, "carol@example.org", 2)
    assert b"Done" in done.data
    [ban] = json.loads(cli(gateway.config, "bans", "list", "--json").stdout)
    assert (ban["pattern"], ban["list"]) == ("spammer@bad.example", "dev@lists.example.org")
    post = (
        b"From: spammer@bad.example\r\nTo: dev@lists.example.org\r\nSubject: buy\r\n"
        b"Message-ID: <spam1@bad.example>\r\n\r\nbuy now\r\n"
    )
    deadline = time.monotonic() + 3  # bans reach a running server within 2 s (SPEC 9)
    while True:
        try:
            gateway.send("spammer@bad.example", ["dev@lists.example.org"], post)
        except smtplib.SMTPRecipientsRefused as refused:
            code = refused.recipients["dev@lists.example.org"][0]
            break
        assert time.monotonic() < deadline, "the confirmed ban did not take effect"
        time.sleep(0.2)
    assert code == 550
