"""A real `serve`, real aiosmtpd sinks, smtplib clients: reports, list posts, bans, holds."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components import free_port
from tests.gateway.gateway_setup import write_config
from tests.serve_process import ServeProcess, cli
from tests.sinks import Received, Sink

# SPEC section 2 bounds, with slack: tests wait up to them and never assert speed.
OUTBOX_BOUND = 5 + 5
BAN_BOUND = 2 + 1
REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <e2e-rep1@example.net>\r\n"
    b"\r\nSomeone was rude to me after the talk.\r\n"
)
POST = (
    b"From: Poster <poster@example.net>\r\nTo: dev@lists.example.org\r\n"
    b"Subject: a question\r\nMessage-ID: <post1@example.net>\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.net; s=s; bh=abc; b=def\r\n"
    b"\r\n.leading dot line\r\n8-bit: caf\xc3\xa9\r\n"
)
EXTRA = """[outbound]
retry_after = 1s
[moderators]
dev@lists.example.org = carol@example.org
"""


@dataclass
class Running:
    serve: ServeProcess
    smarthost: Sink
    upstream: Sink
    smtp_port: int
    config: Path

    def send(self, sender: str, recipients: list[str], data: bytes) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            return client.sendmail(sender, recipients, data)


def start(
    tmp_path: Path,
    url: str,
    *,
    protocol: str = "smtp",
    ban_action: str = "reject",
) -> Running:
    smarthost = Sink().start()
    upstream = Sink(lmtp=protocol == "lmtp").start()
    port = free_port()
    text = write_config(
        tmp_path,
        url,
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        protocol=protocol,
        ban_action=ban_action,
        smtp_port=port,
    )
    # The test file has its own [outbound]; merge the extra keys into it.
    body = text.read_text().replace("[outbound]\n", "[outbound]\nretry_after = 1s\n")
    body += "[moderators]\ndev@lists.example.org = carol@example.org\n"
    body = body.replace(
        "[outbound]\nretry_after = 1s\nsmarthost",
        "[outbound]\nretry_after = 1s\ntls = none\nsmarthost",
    )
    text.write_text(body)
    if not (tmp_path / "secret").exists():
        (tmp_path / "secret").write_bytes(b"s" * 32)
    return Running(ServeProcess(text).start(), smarthost, upstream, port, text)


def kinds(messages: list[Received]) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((m.mail_from, m.rcpt_tos) for m in messages)


def test_a_report_by_smtp_reaches_the_reporter_and_staff(gateway: Running) -> None:
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    found = gateway.smarthost.wait_for(lambda m: len(m) >= 3, OUTBOX_BOUND)
    ack = [m for m in found if m.mail_from in ("", "<>")]
    assert [m.rcpt_tos for m in ack] == [("rita@example.net",)]
    staff = sorted(m.rcpt_tos[0] for m in found if m.mail_from.startswith("conduct+bounce-"))
    assert staff == ["alice@example.org", "bob@example.org"]
    message = email.message_from_bytes(ack[0].data, policy=email.policy.default)
    assert message["Subject"] == "[Conduct #1] A message from the Conduct team"
    time.sleep(1)
    assert len(gateway.smarthost.messages) == 3  # nothing sent twice
    assert "rita@example.net" not in gateway.serve.log  # addresses only at debug


def test_a_permitted_list_post_is_relayed_byte_for_byte(gateway: Running) -> None:
    refused = gateway.send("poster@example.net", ["dev@lists.example.org"], POST)
    assert refused == {}
    [relayed] = gateway.upstream.wait_for(lambda m: len(m) == 1, 5)
    assert relayed.rcpt_tos == ("dev@lists.example.org",)
    assert relayed.data.startswith(b"Received: from ")
    assert relayed.data.endswith(POST)
    head, _, _ = relayed.data.partition(b"\r\nFrom: Poster")
    assert head.count(b"Received:") == 1


def test_a_ban_added_by_the_cli_refuses_the_next_post(gateway: Running) -> None:
    result = cli(
        gateway.config,
        "bans",
        "add",
        "poster@example.net",
        "--list",
        "dev@lists.example.org",
        "--reason",
        "spam",
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + BAN_BOUND
    while True:
        try:
            gateway.send("Poster+tag@Example.NET", ["dev@lists.example.org"], POST)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients["dev@lists.example.org"]
            break
        assert time.monotonic() < deadline, "the ban did not take effect within 2 s"
        time.sleep(0.2)
    assert code == 550
    assert text == b"5.7.1 Posting to dev@lists.example.org is not permitted"
    assert b"spam" not in text


def test_a_from_header_ban_refuses_the_post_at_data(gateway: Running) -> None:
    cli(gateway.config, "bans", "add", "*@example.net")
    time.sleep(BAN_BOUND)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("other@example.com", ["dev@lists.example.org"], POST)
    assert refused.value.smtp_code == 550
    assert gateway.upstream.messages == []


def test_a_post_without_from_is_refused_with_5_6_0(gateway: Running) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("x@example.com", ["dev@lists.example.org"], b"Subject: hi\r\n\r\nbody\r\n")
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.6.0")


def test_conduct_and_list_recipients_must_be_sent_separately(gateway: Running) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.ehlo()
        client.mail("rita@example.net")
        assert client.rcpt("conduct@example.org")[0] == 250
        code, text = client.rcpt("dev@lists.example.org")
    assert (code, text) == (452, b"4.5.3 Send separately")


def test_an_open_relay_attempt_is_refused(gateway: Running) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        gateway.send("a@example.com", ["victim@elsewhere.example"], POST)
    assert refused.value.recipients["victim@elsewhere.example"][0] == 554


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_held_post_is_announced_and_released_to_the_list(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url, ban_action="hold")
    try:
        cli(running.config, "bans", "add", "poster@example.net")
        time.sleep(BAN_BOUND)
        assert running.send("poster@example.net", ["dev@lists.example.org"], POST) == {}
        assert running.upstream.messages == []
        [notice] = running.smarthost.wait_for(lambda m: len(m) >= 1, OUTBOX_BOUND)
        assert notice.rcpt_tos == ("carol@example.org",)
        held = cli(running.config, "held", "list", "--json")
        [entry] = json.loads(held.stdout)
        assert str(entry["id"]).encode() in notice.data
        assert cli(running.config, "held", "release", str(entry["id"])).returncode == 0
        [released] = running.upstream.wait_for(lambda m: len(m) == 1, OUTBOX_BOUND)
        assert released.rcpt_tos == ("dev@lists.example.org",)
        assert released.data.endswith(POST)
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_lmtp_deferral_is_retried_from_the_outbox(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url, protocol="lmtp")
    running.upstream.recorder.data_answers["announce@lists.example.org"] = "452 4.2.2 Mailbox full"
    try:
        refused = running.send(
            "poster@example.net", ["dev@lists.example.org", "announce@lists.example.org"], POST
        )
        assert refused == {}
        assert [m.rcpt_tos for m in running.upstream.messages] == [("dev@lists.example.org",)]
        running.upstream.recorder.data_answers.clear()
        found = running.upstream.wait_for(lambda m: len(m) == 2, OUTBOX_BOUND + 5)
        assert found[1].rcpt_tos == ("announce@lists.example.org",)
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_upstream_that_is_down_gives_451(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url)
    running.upstream.stop()
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            running.send("poster@example.net", ["dev@lists.example.org"], POST)
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.4.1")
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_smarthost_down_then_back_loses_and_duplicates_nothing(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url)
    running.smarthost.stop()
    try:
        running.send("rita@example.net", ["conduct@example.org"], REPORT)
        running.serve.wait_for_log("event=deferred", OUTBOX_BOUND)
        running.smarthost.start()
        found = running.smarthost.wait_for(lambda m: len(m) >= 3, 30)
        time.sleep(2)
        assert len(running.smarthost.messages) == 3
        assert len({m.rcpt_tos for m in found}) == 3
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_contact_holds_the_accused_s_reply_to_the_reporter(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    from datetime import UTC, datetime

    from gateway import config
    from storage import cases
    from storage.db import Database
    from storage.models import Sanction

    running = start(tmp_path, database_url)
    try:
        database = Database(config.load(running.config).storage.url)
        now = datetime.now(UTC)
        with database.transaction() as session:
            number = cases.open_case(session, now=now, subject="s", urgent=False)
            for address, role in (
                ("rita@example.net", "reporter"),
                ("mallory@example.com", "accused"),
            ):
                cases.add_participant(
                    session,
                    case=number,
                    address=address,
                    written=address,
                    name="",
                    role=role,
                    recused=False,
                    now=now,
                )
            session.add(
                Sanction(
                    case_number=number,
                    kind="no-contact",
                    at=now,
                    until=None,
                    note=None,
                    created_by="alice@example.org",
                )
            )
        database.dispose()
        rita_post = (
            b"From: rita@example.net\r\nTo: dev@lists.example.org\r\nSubject: hi\r\n"
            b"Message-ID: <rita-post@example.net>\r\n\r\nhello list\r\n"
        )
        assert running.send("rita@example.net", ["dev@lists.example.org"], rita_post) == {}
        reply = (
            b"From: mallory@example.com\r\nTo: dev@lists.example.org\r\nSubject: Re: hi\r\n"
            b"In-Reply-To: <rita-post@example.net>\r\nMessage-ID: <m1@example.com>\r\n\r\n"
            b"a reply\r\n"
        )
        unrelated = reply.replace(b"In-Reply-To: <rita-post@example.net>\r\n", b"").replace(
            b"<m1@", b"<m2@"
        )
        time.sleep(2.5)  # the relayed-post index and the no-contact map refresh each second
        assert running.send("mallory@example.com", ["dev@lists.example.org"], reply) == {}
        assert running.send("mallory@example.com", ["dev@lists.example.org"], unrelated) == {}
        relayed = running.upstream.wait_for(lambda m: len(m) == 2, 5)
        assert [b"<m1@example.com>" in m.data for m in relayed] == [False, False]
        held = json.loads(cli(running.config, "held", "list", "--json").stdout)
        assert [(h["reason"], h["case"]) for h in held] == [("no-contact", number)]
        # The list's moderator, and the case's staff: the accused tried to reach the reporter.
        told = {("carol@example.org",), ("alice@example.org",), ("bob@example.org",)}
        running.smarthost.wait_for(
            lambda m: told <= {x.rcpt_tos for x in m if b"Held post" in x.data}, OUTBOX_BOUND
        )
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_lmtp_refusal_is_told_to_the_moderators_never_to_the_sender(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url, protocol="lmtp")
    running.upstream.recorder.data_answers["dev@lists.example.org"] = "550 5.7.1 Not a member"
    try:
        refused = running.send(
            "poster@example.net", ["dev@lists.example.org", "announce@lists.example.org"], POST
        )
        assert refused == {}  # 250: announce took it; dev's refusal is not a bounce
        [notice] = running.smarthost.wait_for(lambda m: len(m) >= 1, OUTBOX_BOUND)
        assert notice.rcpt_tos == ("carol@example.org",)
        assert b"Not a member" in notice.data
        time.sleep(1)
        assert all(m.rcpt_tos != ("poster@example.net",) for m in running.smarthost.messages)
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()
