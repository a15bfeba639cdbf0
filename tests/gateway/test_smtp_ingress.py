"""SMTP ingress: a real aiosmtpd server, real databases (SQLite and PostgreSQL), smtplib clients."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gateway import config
from gateway.config import Settings
from gateway.list_gate import IncomingEnvelope
from gateway.smtp_ingress import SmtpIngress
from gateway.smtp_limits import SmtpTlsError
from rules.routing import Route, RouteKind
from storage import inbox
from storage.db import Database
from storage.models import InboxEntry

T = TypeVar("T")
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CONDUCT = "conduct@example.org"
LIST = "dev@lists.example.org"
SENDER = "reporter@example.net"
LOCAL_ERROR = b"4.3.0 Requested action aborted: local error in processing"
TOO_BIG = b"5.3.4 Message size exceeds fixed maximum message size"
CONFIG = """[gateway]
conduct_address = conduct@example.org
staff = alice@example.org
executive_director = ed@example.org
local_domains = example.org, example.com

[smtp]
listen = 127.0.0.1:0
hostname = mx.example.org
max_message_size = 64K
max_connections = 20
max_recipients = 5
timeout = 1m

[relay]
lists = dev@lists.example.org

[storage]
url = {url}
"""


def message(mid: str, body: str = "Something happened.") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {CONDUCT}\r\nMessage-ID: <{mid}>\r\n"
        f"Subject: report\r\n\r\n{body}\r\n"
    ).encode()


class RecordingListGate:
    """The ListGate the lead implements, reduced to recording its calls."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self.reply = "250 2.0.0 Ok: relayed upstream"
        self.fail_check = False
        self.checked: list[tuple[str, Route]] = []
        self.delivered: list[tuple[IncomingEnvelope, tuple[Route, ...], bytes]] = []

    async def check_envelope(self, sender: str, route: Route) -> str | None:
        if self.fail_check:
            raise RuntimeError("secret internal detail")
        self.checked.append((sender, route))
        return self.refusal

    async def deliver(self, envelope: IncomingEnvelope, routes: Sequence[Route], raw: bytes) -> str:
        self.delivered.append((envelope, tuple(routes), raw))
        return self.reply


class LoopThread:
    """An asyncio loop in a background thread, as the daemon's loop would be."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class Gateway:
    """A started SmtpIngress, the database behind it and its ListGate."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.list_gate = RecordingListGate()
        self.thread = LoopThread()
        self.ingress = SmtpIngress(lambda: self.settings, database, self.list_gate, lambda: NOW)
        self.thread.run(self.ingress.start())
        assert self.ingress.port
        self.port = self.ingress.port
        self.stopped = False

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP(
            "127.0.0.1", self.port, local_hostname="client.example.net", timeout=60
        )
        client.ehlo()
        return client

    def rows(self) -> list[InboxEntry]:
        with self.database.transaction() as session:
            return list(session.scalars(select(InboxEntry).order_by(InboxEntry.id)))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.thread.run(self.ingress.stop())

    def close(self) -> None:
        self.stop()
        self.thread.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    path = tmp_path / "gateway.ini"
    path.write_text(CONFIG.format(url=database_url), encoding="utf-8")
    return config.load(path)


@pytest.fixture
def start(settings: Settings, database_url: str) -> Iterator[Any]:
    """start(**smtp_settings) -> a running Gateway; stopped at the end of the test."""
    database = Database(database_url)
    started: list[Gateway] = []

    def _start(**smtp: Any) -> Gateway:
        changed = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, **smtp))
        gateway = Gateway(changed, database)
        started.append(gateway)
        return gateway

    yield _start
    for gateway in started:
        gateway.close()
    database.dispose()


@pytest.fixture
def gateway(start: Any) -> Gateway:
    return start()  # type: ignore[no-any-return]


def send(gateway: Gateway, raw: bytes, rcpts: Sequence[str] = (CONDUCT,)) -> tuple[int, bytes]:
    with gateway.client() as client:
        client.mail(SENDER)
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            assert code == 250, text
        return client.data(raw)


def queue_id(reply: bytes) -> int:
    match = re.fullmatch(rb"2\.0\.0 Ok: queued as (\d+)", reply)
    assert match, reply
    return int(match.group(1))


# Conduct mail: committed before 250 -------------------------------------------------


def test_conduct_mail_is_committed_to_the_inbox_when_250_arrives(gateway: Gateway) -> None:
    raw = message("report-1@example.net")
    code, reply = send(gateway, raw, ["conduct+42@example.org", CONDUCT])
    assert code == 250
    [row] = gateway.rows()
    assert row.id == queue_id(reply)
    assert row.raw == raw
    assert row.source == "smtp"
    assert row.envelope_sender == SENDER
    assert row.envelope_recipients == '["conduct+42@example.org", "conduct@example.org"]'
    assert row.message_id == "report-1@example.net"
    assert row.received_at == NOW


def test_a_duplicate_gets_250_and_stays_one_inbox_row(gateway: Gateway) -> None:
    raw = message("twice@example.net")
    first = send(gateway, raw)
    second = send(gateway, raw)
    assert first[0] == second[0] == 250
    assert queue_id(first[1]) == queue_id(second[1])
    assert len(gateway.rows()) == 1


def test_the_null_sender_is_accepted_and_stored_as_none(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.mail("<>")[0] == 250
        assert client.rcpt(CONDUCT)[0] == 250
        assert client.data(message("dsn@example.net"))[0] == 250
    [row] = gateway.rows()
    assert row.envelope_sender is None


def test_a_nul_in_the_message_id_and_a_330_character_sender_are_stored_with_250(
    gateway: Gateway,
) -> None:
    """PostgreSQL refused both values, so such mail was answered 451 at every retry; it is
    kept whole, without an envelope sender no address can be that long (RFC 5321 4.5.3.1.3)."""
    raw = message("odd\x00id@example.net")
    long_sender = "x" * 330 + "@example.net"
    replies = []
    for _ in range(2):  # a retry finds the same row: the dedup key is what it always was
        with gateway.client() as client:
            assert client.mail(long_sender)[0] == 250
            assert client.rcpt(CONDUCT)[0] == 250
            replies.append(client.data(raw))
    assert [code for code, _ in replies] == [250, 250]
    [row] = gateway.rows()
    assert row.id == queue_id(replies[0][1]) == queue_id(replies[1][1])
    assert (row.raw, row.envelope_sender, row.message_id) == (raw, None, "odd\ufffdid@example.net")


def test_postmaster_mail_is_kept_like_conduct_mail(gateway: Gateway) -> None:
    code, _ = send(gateway, message("pm@example.net"), ["postmaster@lists.example.org", CONDUCT])
    assert code == 250
    [row] = gateway.rows()
    assert row.envelope_recipients == '["postmaster@lists.example.org", "conduct@example.org"]'


# Routing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "code", "text"),
    [
        ("conduct@example.org", 250, b"2.1.5 Ok"),
        ("conduct+42@example.org", 250, b"2.1.5 Ok"),
        ("conduct+42-notavalidtoken@example.org", 250, b"2.1.5 Ok"),
        ("conduct+anything-at-all@example.org", 250, b"2.1.5 Ok"),
        ("Conduct@EXAMPLE.Org", 250, b"2.1.5 Ok"),
        ("postmaster@example.org", 250, b"2.1.5 Ok"),
        ("postmaster@example.com", 250, b"2.1.5 Ok"),
        ("PostMaster@Lists.Example.ORG", 250, b"2.1.5 Ok"),
        ("postmaster", 250, b"2.1.5 Ok"),
        ("dev@LISTS.example.org", 250, b"2.1.5 Ok"),
        ("nobody@example.org", 550, b"5.1.1 No such user here"),
        ("nobody@Example.COM", 550, b"5.1.1 No such user here"),
        ("other@lists.example.org", 550, b"5.1.1 No such user here"),
        ("someone@elsewhere.example", 554, b"5.7.1 relay access denied"),
        ("conduct@example.org.evil.example", 554, b"5.7.1 relay access denied"),
    ],
)
def test_each_recipient_gets_the_reply_of_its_route(
    gateway: Gateway, rcpt: str, code: int, text: bytes
) -> None:
    with gateway.client() as client:
        client.mail(SENDER)
        assert client.rcpt(rcpt) == (code, text)


@pytest.mark.parametrize(("first", "second"), [(CONDUCT, LIST), (LIST, CONDUCT)])
def test_conduct_and_list_recipients_go_in_separate_transactions(
    gateway: Gateway, first: str, second: str
) -> None:
    with gateway.client() as client:
        client.mail(SENDER)
        assert client.rcpt(first)[0] == 250
        assert client.rcpt(second) == (452, b"4.5.3 Send separately")
        assert client.rcpt("postmaster@example.org")[0] == (250 if first == CONDUCT else 452)


def test_a_refused_first_recipient_does_not_decide_the_kind(gateway: Gateway) -> None:
    with gateway.client() as client:
        client.mail(SENDER)
        assert client.rcpt("nobody@example.org")[0] == 550
        assert client.rcpt(LIST)[0] == 250
        assert client.rcpt(CONDUCT)[0] == 452


def test_recipients_past_max_recipients_get_452_and_the_rest_is_stored(start: Any) -> None:
    gateway = start(max_recipients=3)
    with gateway.client() as client:
        client.mail(SENDER)
        for n in range(3):
            assert client.rcpt(f"conduct+{n}@example.org")[0] == 250
        assert client.rcpt("conduct+3@example.org") == (452, b"4.5.3 Too many recipients")
        assert client.data(message("many@example.net"))[0] == 250
    [row] = gateway.rows()
    assert row.envelope_recipients == (
        '["conduct+0@example.org", "conduct+1@example.org", "conduct+2@example.org"]'
    )


def test_the_transaction_kind_resets_after_rset(gateway: Gateway) -> None:
    with gateway.client() as client:
        client.mail(SENDER)
        assert client.rcpt(CONDUCT)[0] == 250
        client.rset()
        client.mail(SENDER)
        assert client.rcpt(LIST)[0] == 250


# List posts ------------------------------------------------------------------------


def test_a_list_post_is_checked_at_rcpt_and_delivered_through_the_list_gate(
    gateway: Gateway,
) -> None:
    raw = b"From: poster@example.net\nTo: dev@lists.example.org\nSubject: hi\n\nhello\n"
    with gateway.client() as client:
        assert client.mail("poster@example.net", ["BODY=8BITMIME", "SMTPUTF8", "SIZE=80"])[0] == 250
        assert client.rcpt(LIST)[0] == 250
        assert client.rcpt("dev-request@lists.example.org")[0] == 250
        assert client.data(raw) == (250, b"2.0.0 Ok: relayed upstream")
    assert [(sender, route.list_address) for sender, route in gateway.list_gate.checked] == [
        ("poster@example.net", LIST),
        ("poster@example.net", LIST),
    ]
    [(envelope, routes, relayed)] = gateway.list_gate.delivered
    assert envelope.mail_from == "poster@example.net"
    assert envelope.helo == "client.example.net"
    assert envelope.peer.startswith("127.0.0.1:")
    assert (envelope.body, envelope.smtputf8, envelope.size) == ("8BITMIME", True, 80)
    assert [r.kind for r in routes] == [RouteKind.LIST, RouteKind.LIST]
    assert [r.rule for r in routes] == ["list-address", "list-server-address"]
    # smtplib sends bytes as given, adding CRLF before the final dot.
    assert relayed == raw.replace(b"\n", b"\r\n") + b"\r\n"
    assert gateway.rows() == []


def test_a_list_post_from_the_null_sender_reaches_the_gate_with_an_empty_sender(
    gateway: Gateway,
) -> None:
    with gateway.client() as client:
        client.mail("<>")
        assert client.rcpt(LIST)[0] == 250
        client.data(b"Subject: bounce\r\n\r\nx\r\n")
    assert gateway.list_gate.checked[0][0] == ""
    envelope = gateway.list_gate.delivered[0][0]
    assert envelope.mail_from == ""
    assert (envelope.size, envelope.body, envelope.smtputf8) == (None, None, False)


def test_the_list_gate_refuses_a_recipient_with_its_own_reply(gateway: Gateway) -> None:
    gateway.list_gate.refusal = "550 5.7.1 Posting to dev@lists.example.org is not permitted"
    with gateway.client() as client:
        client.mail("banned@example.net")
        assert client.rcpt(LIST) == (
            550,
            b"5.7.1 Posting to dev@lists.example.org is not permitted",
        )
        assert client.rcpt(CONDUCT)[0] == 250  # a refused recipient decides nothing


def test_an_unexpected_error_answers_451_without_detail(gateway: Gateway) -> None:
    gateway.list_gate.fail_check = True
    with gateway.client() as client:
        client.mail(SENDER)
        assert client.rcpt(LIST) == (451, LOCAL_ERROR)
        assert client.noop()[0] == 250


# Limits ----------------------------------------------------------------------------


def test_a_declared_size_over_the_limit_gets_552_5_3_4(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.esmtp_features["size"] == str(64 * 1024)
        assert client.mail(SENDER, [f"SIZE={64 * 1024 + 1}"]) == (552, TOO_BIG)
        assert client.mail(SENDER, ["SIZE=1000"])[0] == 250


def test_data_over_the_limit_gets_552_5_3_4_and_nothing_is_stored(gateway: Gateway) -> None:
    big = message("big@example.net", "x" * 70 + "\r\n") * 1000
    with gateway.client() as client:
        client.mail(SENDER)  # no SIZE=: only the data shows it is too big
        client.rcpt(CONDUCT)
        assert client.data(big) == (552, TOO_BIG)
        assert client.noop()[0] == 250
    assert gateway.rows() == []


def test_a_connection_past_max_connections_gets_421_and_later_ones_are_served(
    start: Any,
) -> None:
    gateway = start(max_connections=2)
    first, second = gateway.client(), gateway.client()
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        gateway.client()
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        421,
        b"4.7.0 Too many connections, try again later",
    )
    first.quit()
    deadline = time.monotonic() + 30
    while True:  # the server sees the QUIT's close a moment later
        try:
            third = gateway.client()
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    third.quit()
    second.quit()


def test_an_idle_connection_is_closed_after_the_timeout(start: Any) -> None:
    gateway = start(timeout=timedelta(seconds=1))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock:
        assert sock.recv(1024).startswith(b"220 mx.example.org ESMTP")
        assert sock.recv(1024) == b""


def test_a_command_repeated_past_its_budget_closes_the_connection(gateway: Gateway) -> None:
    with gateway.client() as client:
        replies = [client.docmd("HELP")[0] for _ in range(30)]
        assert set(replies) == {250}
        assert client.docmd("HELP") == (421, b"4.7.0 HELP sent too many times")


# SMTP smuggling and line endings ----------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<conduct@example.org>\r\nDATA\r\n"
    b"From: smuggler@evil.example\r\nMessage-ID: <smuggled@evil.example>\r\n\r\nforged\r\n"
)


@pytest.mark.parametrize(
    ("separator", "stored"),
    [
        (b"\n.\n", b"first body\r\n.\r\nMAIL FROM:<smuggler@evil.example>"),
        # A line that starts with "." loses it (RFC 5321 section 4.5.2 transparency).
        (b"\r\n.\n", b"first body\r\n\r\nMAIL FROM:<smuggler@evil.example>"),
        (b"\r.\r", b"first body\r\n.\r\nMAIL FROM:<smuggler@evil.example>"),
        (b"\n.\r\n", b"first body\r\n.\r\nMAIL FROM:<smuggler@evil.example>"),
    ],
    ids=["lf-dot-lf", "crlf-dot-lf", "cr-dot-cr", "lf-dot-crlf"],
)
def test_a_bare_line_end_dot_never_ends_data_or_starts_a_second_message(
    gateway: Gateway, separator: bytes, stored: bytes
) -> None:
    first = b"From: a@example.net\r\nMessage-ID: <first@example.net>\r\n\r\nfirst body"
    with gateway.client() as client:
        client.mail(SENDER)
        client.rcpt(CONDUCT)
        assert client.docmd("DATA")[0] == 354
        client.send(first + separator + SMUGGLED + b".\r\n")
        code, _ = client.getreply()
        assert code == 250
        # Had the smuggled commands run, their replies would come before this one.
        assert client.noop() == (250, b"OK")
    [row] = gateway.rows()
    assert row.message_id == "first@example.net"
    assert stored in row.raw
    assert row.envelope_sender == SENDER


def test_bare_lf_and_bare_cr_are_stored_as_crlf(gateway: Gateway) -> None:
    with gateway.client() as client:
        client.mail(SENDER)
        client.rcpt(CONDUCT)
        client.docmd("DATA")
        client.send(b"Message-ID: <lf@example.net>\nSubject: x\n\nline one\rline two\r\n.\r\n")
        assert client.getreply()[0] == 250
    [row] = gateway.rows()
    assert row.raw == b"Message-ID: <lf@example.net>\r\nSubject: x\r\n\r\nline one\r\nline two\r\n"


def test_a_long_message_with_only_bare_lf_line_ends_is_accepted_and_normalised(
    gateway: Gateway,
) -> None:
    body = b"".join(b"line %d of a script's report\n" % n for n in range(500))
    with gateway.client() as client:
        client.mail(SENDER)
        client.rcpt(CONDUCT)
        client.docmd("DATA")
        client.send(b"Message-ID: <long-lf@example.net>\n\n" + body + b"\r\n.\r\n")
        assert client.getreply()[0] == 250
    [row] = gateway.rows()
    assert (
        row.raw
        == b"Message-ID: <long-lf@example.net>\r\n\r\n" + body.replace(b"\n", b"\r\n") + b"\r\n"
    )


# Failures --------------------------------------------------------------------------


def test_a_client_that_hangs_up_mid_data_leaves_nothing_and_the_server_serves_on(
    gateway: Gateway,
) -> None:
    client = gateway.client()
    client.mail(SENDER)
    client.rcpt(CONDUCT)
    assert client.docmd("DATA")[0] == 354
    client.send(b"Message-ID: <half@example.net>\r\n\r\nhalf a mess")
    client.close()
    code, _ = send(gateway, message("whole@example.net"))
    assert code == 250
    assert [row.message_id for row in gateway.rows()] == ["whole@example.net"]


def test_a_storage_failure_answers_451_with_no_detail_and_stores_nothing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unwritable(*args: Any, **kwargs: Any) -> list[inbox.Stored]:
        raise OperationalError("INSERT INTO inbox", {}, Exception("disk I/O error at /var/db"))

    monkeypatch.setattr(inbox, "store_many", unwritable)
    caplog.set_level(logging.INFO, logger="conduct_gateway")
    assert send(gateway, message("lost@example.net")) == (451, LOCAL_ERROR)
    [failed] = [r for r in caplog.records if r.getMessage() == "smtp-store-failed"]
    assert failed.__dict__["fields"] == {
        "message_id": "lost@example.net",
        "error": "OperationalError",
    }
    assert SENDER not in caplog.text
    monkeypatch.undo()
    assert gateway.rows() == []
    assert send(gateway, message("lost@example.net"))[0] == 250


def test_logs_at_info_carry_no_address(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    send(gateway, message("quiet@example.net"), ["conduct+7@example.org"])
    names = [r.getMessage() for r in caplog.records if r.name == "conduct_gateway.smtp"]
    assert {"smtp-connection", "smtp-route", "smtp-stored"} <= set(names)
    assert "@example.org" not in caplog.text
    assert SENDER not in caplog.text


# TLS, load, shutdown ---------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.org")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_is_offered_with_a_certificate_and_mail_is_accepted_over_it(
    start: Any, tmp_path: Path
) -> None:
    cert_path, key_path = self_signed(tmp_path)
    gateway = start(tls_certificate=cert_path, tls_key=key_path)
    # Verified for real: the client trusts exactly this certificate, issued to 127.0.0.1.
    context = ssl.create_default_context(cafile=str(cert_path))
    with gateway.client() as client:
        assert client.has_extn("starttls")
        assert client.starttls(context=context)[0] == 220
        client.ehlo()
        assert not client.has_extn("starttls")
        assert not client.has_extn("auth")  # no accounts: AUTH could only fail
        client.mail(SENDER)
        client.rcpt(CONDUCT)
        assert client.data(message("tls@example.net"))[0] == 250
    assert [row.message_id for row in gateway.rows()] == ["tls@example.net"]


def test_a_certificate_that_does_not_load_stops_start_up(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    smtp = dataclasses.replace(settings.smtp, tls_certificate=broken, tls_key=broken)
    database = Database(database_url)
    ingress = SmtpIngress(
        lambda: dataclasses.replace(settings, smtp=smtp), database, RecordingListGate(), lambda: NOW
    )
    with pytest.raises(SmtpTlsError, match=r"broken\.pem"):
        asyncio.run(ingress.start())
    database.dispose()


def test_starttls_is_not_offered_without_a_certificate(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert not client.has_extn("starttls")
        assert not client.has_extn("auth")


@pytest.mark.slow
def test_two_hundred_concurrent_clients_each_get_250_and_a_row(start: Any) -> None:
    gateway = start(max_connections=250)

    def one(n: int) -> int:
        return send(gateway, message(f"load-{n}@example.net"))[0]

    with ThreadPoolExecutor(max_workers=200) as pool:
        codes = list(pool.map(one, range(200)))
    assert codes == [250] * 200
    assert len({row.message_id for row in gateway.rows()}) == 200


def test_stop_lets_a_transaction_in_flight_finish_and_closes_idle_connections(
    gateway: Gateway,
) -> None:
    idle = gateway.client()
    busy = gateway.client()
    busy.mail(SENDER)
    busy.rcpt(CONDUCT)
    stopping = asyncio.run_coroutine_threadsafe(gateway.ingress.stop(), gateway.thread.loop)
    gateway.stopped = True
    assert busy.data(message("last@example.net"))[0] == 250
    stopping.result(timeout=60)
    assert [row.message_id for row in gateway.rows()] == ["last@example.net"]
    # The idle client is told, unasked, and then the server hangs up.
    assert idle.getreply() == (421, b"4.3.2 Service shutting down, try again later")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        idle.getreply()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()
    busy.close()
    idle.close()
