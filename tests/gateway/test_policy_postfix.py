"""The policy service behind a real private Postfix, and its protocol handling over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import smtplib
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from gateway import config
from gateway.config import Settings
from gateway.policy_server import IDLE_TIMEOUT, MAX_SKIPPED, PolicyServer
from rules.bans import Ban, BanIndex, parse_pattern
from storage import audit
from storage.db import Database
from storage.models import AuditEvent
from tests.components import free_port
from tests.postfix import PrivatePostfix, private_postfix

T = TypeVar("T")
DEV = "dev@lists.example.org"
REFUSAL = f"Posting to {DEV} is not permitted"
SETTINGS = """[gateway]
conduct_address = conduct@example.org
staff = alice@example.org
executive_director = ed@example.org

[relay]
lists = dev@lists.example.org

[policy]
listen = 127.0.0.1:0

[reminders]
timezone = UTC
"""
TIMED_END = datetime(2099, 1, 2, 3, 4, tzinfo=UTC)


def ban(ban_id: int, pattern: str, expires_at: datetime | None = None) -> Ban:
    return Ban(
        id=ban_id,
        pattern=parse_pattern(pattern),
        list=DEV,
        reason="private reason",
        created_by="alice@example.org",
        created_at=datetime.now(UTC) - timedelta(days=30),
        expires_at=expires_at,
    )


BANS = BanIndex(
    [
        ban(1, "spammer@bad.example"),
        ban(2, "timed@bad.example", expires_at=TIMED_END),
        ban(3, "former@bad.example", expires_at=datetime.now(UTC) - timedelta(minutes=1)),
    ]
)


class LoopThread:
    """An asyncio loop in a background thread (the suite has no pytest-asyncio)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Recorder:
    """The relayhost: an aiosmtpd sink that keeps every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def wait_for(self, marker: str, timeout: float = 20.0) -> Envelope | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for envelope in list(self.envelopes):
                if marker.encode() in bytes(envelope.original_content or b""):
                    return envelope
            time.sleep(0.1)
        return None


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path: Path = tmp_path_factory.mktemp("policy") / "gateway.ini"
    path.write_text(SETTINGS, encoding="utf-8")
    return config.load(path)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


def start_server(
    loop_thread: LoopThread, settings: Settings, idle_timeout: float = IDLE_TIMEOUT
) -> PolicyServer:
    server = PolicyServer(
        lambda: settings, BANS.match, lambda: datetime.now(UTC), idle_timeout=idle_timeout
    )
    loop_thread.run(server.start())
    return server


@pytest.fixture(scope="module")
def policy(loop_thread: LoopThread, settings: Settings) -> Iterator[PolicyServer]:
    server = start_server(loop_thread, settings)
    yield server
    loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def sink() -> Iterator[Recorder]:
    recorder = Recorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=free_port(), server_hostname="sink.test"
    )
    controller.start()
    recorder.port = controller.port
    yield recorder
    controller.stop()


@pytest.fixture(scope="module")
def postfix(policy: PolicyServer, sink: Recorder) -> Iterator[PrivatePostfix]:
    with private_postfix(
        relay_domains=["lists.example.org"],
        relayhost=("127.0.0.1", sink.port),
        recipient_restrictions=[
            f"check_policy_service inet:127.0.0.1:{policy.port}",
            "permit_mynetworks",
            "reject_unauth_destination",
        ],
    ) as running:
        yield running


def post(postfix: PrivatePostfix, sender: str, recipient: str = DEV) -> str:
    """Send one post through Postfix; returns its unique marker (in the Subject)."""
    marker = uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = sender or "mailer-daemon@good.example"
    message["To"] = recipient
    message["Subject"] = f"post {marker}"
    message.set_content("hello list\n")
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        client.send_message(message, from_addr=sender, to_addrs=[recipient])
    return marker


def refusal(postfix: PrivatePostfix, sender: str, recipient: str = DEV) -> tuple[int, str]:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        post(postfix, sender, recipient)
    code, text = refused.value.recipients[recipient]
    return code, text.decode()


@pytest.mark.postfix
def test_postfix_refuses_a_banned_envelope_sender_with_the_policy_550(
    postfix: PrivatePostfix,
) -> None:
    # The policy's own code and DSN reach the client; Postfix adds "<rcpt>: Recipient
    # address rejected:" (a bare REJECT would give access_map_reject_code, 554).
    code, text = refusal(postfix, "spammer@bad.example")
    assert code == 550
    assert text == f"5.7.1 <{DEV}>: Recipient address rejected: {REFUSAL}"


@pytest.mark.postfix
@pytest.mark.parametrize("sender", ["Spammer+lists@BAD.example", "SPAMMER@bad.EXAMPLE"])
def test_postfix_refuses_tag_and_case_variants_of_a_banned_sender(
    postfix: PrivatePostfix, sender: str
) -> None:
    code, text = refusal(postfix, sender)
    assert (code, text.endswith(REFUSAL)) == (550, True)


@pytest.mark.postfix
def test_postfix_refuses_a_timed_ban_naming_its_end(postfix: PrivatePostfix) -> None:
    code, text = refusal(postfix, "timed@bad.example")
    assert code == 550
    assert text.endswith(f"{REFUSAL} until 2099-01-02 03:04 UTC")
    assert "private reason" not in text


@pytest.mark.postfix
def test_a_permitted_sender_is_relayed_to_the_list_server(
    postfix: PrivatePostfix, sink: Recorder
) -> None:
    marker = post(postfix, "friend@good.example")
    envelope = sink.wait_for(marker)
    assert envelope is not None, postfix.diagnostics()
    assert (envelope.mail_from, envelope.rcpt_tos) == ("friend@good.example", [DEV])


@pytest.mark.postfix
def test_an_expired_timed_ban_lets_mail_through(postfix: PrivatePostfix, sink: Recorder) -> None:
    marker = post(postfix, "former@bad.example")
    assert sink.wait_for(marker) is not None, postfix.diagnostics()


@pytest.mark.postfix
def test_a_banned_sender_can_still_unsubscribe(postfix: PrivatePostfix, sink: Recorder) -> None:
    marker = post(postfix, "spammer@bad.example", "dev-leave@lists.example.org")
    assert sink.wait_for(marker) is not None, postfix.diagnostics()


@pytest.mark.postfix
def test_the_null_sender_is_never_refused(postfix: PrivatePostfix, sink: Recorder) -> None:
    marker = post(postfix, "")
    envelope = sink.wait_for(marker)
    assert envelope is not None, postfix.diagnostics()
    assert envelope.mail_from == "<>"


# Direct protocol tests: a socket against the policy server.


def request(
    sender: str = "spammer@bad.example", state: str = "RCPT", recipient: str = DEV
) -> bytes:
    return (
        "request=smtpd_access_policy\n"
        f"protocol_state={state}\n"
        "protocol_name=ESMTP\n"
        "client_address=192.0.2.1\n"
        f"sender={sender}\n"
        f"recipient={recipient}\n"
        "queue_id=\n"
        "\n"
    ).encode()


def read_answers(connection: socket.socket, count: int) -> list[str]:
    data = b""
    while data.count(b"\n\n") < count:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return [part + "\n\n" for part in data.decode().split("\n\n")[:count]]


def connect(server: PolicyServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(100) == b""
    except ConnectionResetError:
        return True


def test_several_requests_on_one_connection_are_answered_in_order(policy: PolicyServer) -> None:
    with connect(policy) as connection:
        connection.sendall(
            request() + request(sender="friend@good.example") + request(state="DATA") + request()
        )
        answers = read_answers(connection, 4)
    refused = f"action=550 5.7.1 {REFUSAL}\n\n"
    assert answers == [refused, "action=DUNNO\n\n", "action=DUNNO\n\n", refused]


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello\n\n",
        b"\x00\xff\xfe=\x80\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"request=smtpd_access_policy\nrequest=smtpd_access_policy\n\n",
        b"\n",
    ],
)
def test_garbage_is_answered_dunno_and_the_connection_goes_on(
    policy: PolicyServer, garbage: bytes
) -> None:
    with connect(policy) as connection:
        connection.sendall(garbage + request())
        answers = read_answers(connection, 2)
    assert answers == ["action=DUNNO\n\n", f"action=550 5.7.1 {REFUSAL}\n\n"]


def test_a_huge_line_is_skipped_and_its_request_answered_dunno(policy: PolicyServer) -> None:
    huge = b"ccert_subject=" + b"x" * 200_000 + b"\n"
    with connect(policy) as connection:
        connection.sendall(request()[:-1] + huge + b"\n" + request())
        answers = read_answers(connection, 2)
    assert answers == ["action=DUNNO\n\n", f"action=550 5.7.1 {REFUSAL}\n\n"]


def test_too_many_attributes_are_answered_dunno(policy: PolicyServer) -> None:
    surplus = b"".join(b"x%d=y\n" % n for n in range(500))
    with connect(policy) as connection:
        connection.sendall(request()[:-1] + surplus + b"\n" + request())
        answers = read_answers(connection, 2)
    assert answers == ["action=DUNNO\n\n", f"action=550 5.7.1 {REFUSAL}\n\n"]


def test_an_endless_line_closes_the_connection(policy: PolicyServer) -> None:
    with connect(policy) as connection:
        # The server may close while this is still being written.
        with contextlib.suppress(OSError):
            connection.sendall(b"sender=" + b"x" * (MAX_SKIPPED * 3))
        assert closed_by_server(connection)
    with connect(policy) as connection:
        connection.sendall(request())
        assert read_answers(connection, 1) == [f"action=550 5.7.1 {REFUSAL}\n\n"]


def test_an_idle_connection_is_closed(loop_thread: LoopThread, settings: Settings) -> None:
    server = start_server(loop_thread, settings, idle_timeout=0.3)
    try:
        with connect(server) as connection:
            connection.sendall(request())
            assert read_answers(connection, 1) == [f"action=550 5.7.1 {REFUSAL}\n\n"]
            started = time.monotonic()
            assert connection.recv(100) == b""
            assert time.monotonic() - started < 5
    finally:
        loop_thread.run(server.stop())


def test_stop_closes_open_connections(loop_thread: LoopThread, settings: Settings) -> None:
    server = start_server(loop_thread, settings)
    with connect(server) as connection:
        connection.sendall(request())
        assert len(read_answers(connection, 1)) == 1
        loop_thread.run(server.stop())
        assert connection.recv(100) == b""


def test_a_failing_ban_lookup_is_answered_dunno(
    loop_thread: LoopThread, settings: Settings
) -> None:
    def broken(_address: str, _list: str, _now: datetime) -> Ban | None:
        raise RuntimeError("the ban cache is not started")

    server = PolicyServer(lambda: settings, broken, lambda: datetime.now(UTC))
    loop_thread.run(server.start())
    try:
        with connect(server) as connection:
            connection.sendall(request() + request(state="DATA"))
            assert read_answers(connection, 2) == ["action=DUNNO\n\n", "action=DUNNO\n\n"]
    finally:
        loop_thread.run(server.stop())


def test_new_settings_apply_to_the_next_request(
    loop_thread: LoopThread, settings: Settings
) -> None:
    # SIGHUP hands the provider new settings; the connection stays open meanwhile.
    unlisted = dataclasses.replace(settings, relay=dataclasses.replace(settings.relay, lists=()))
    current = [unlisted]
    server = PolicyServer(lambda: current[-1], BANS.match, lambda: datetime.now(UTC))
    loop_thread.run(server.start())
    try:
        with connect(server) as connection:
            connection.sendall(request())
            assert read_answers(connection, 1) == ["action=DUNNO\n\n"]
            current.append(settings)
            connection.sendall(request())
            assert read_answers(connection, 1) == [f"action=550 5.7.1 {REFUSAL}\n\n"]
    finally:
        loop_thread.run(server.stop())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_ban_hit_is_logged_at_info_without_the_address(policy: PolicyServer) -> None:
    handler = Records()
    logger = logging.getLogger("conduct_gateway.policy")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with connect(policy) as connection:
            connection.sendall(request())
            read_answers(connection, 1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    records = handler.records
    hits = [r for r in records if r.getMessage() == "ban-hit"]
    assert len(hits) == 1
    fields = hits[0].fields  # type: ignore[attr-defined]
    assert fields["ban"] == 1
    assert fields["list"] == DEV
    assert all("bad.example" not in str(r.__dict__.get("fields")) for r in records)


def test_a_ban_hit_is_audited_with_the_identity_and_the_ban(
    loop_thread: LoopThread, settings: Settings, db: Database
) -> None:
    server = PolicyServer(lambda: settings, BANS.match, lambda: datetime.now(UTC), database=db)
    loop_thread.run(server.start())
    try:
        with connect(server) as connection:
            connection.sendall(request() + request(sender="friend@good.example"))
            answers = read_answers(connection, 2)
    finally:
        loop_thread.run(server.stop())
    assert answers == [f"action=550 5.7.1 {REFUSAL}\n\n", "action=DUNNO\n\n"]
    with db.transaction() as session:
        rows = session.execute(
            select(AuditEvent.actor, AuditEvent.detail).where(AuditEvent.action == "ban-hit")
        ).all()
        assert audit.verify_chain(session).problem is None
    [(actor, detail)] = rows
    assert actor == "gateway"
    assert json.loads(detail) == {
        "identity": "envelope",
        "ban": 1,
        "list": DEV,
        "verdict": "reject",
        "stage": "policy",
    }
