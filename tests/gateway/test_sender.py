"""The outbox sender against a real aiosmtpd smarthost: bytes, envelope, TLS, AUTH, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from gateway import config
from gateway.config import Settings
from gateway.config_values import HostPort
from gateway.sender import CLAIM_LEASE, DeliveryResult, OutboxSender
from storage import outbox
from storage.db import Database
from storage.models import OutboxEntry
from storage.outbox import OutgoingMail
from tests.components import free_port

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
RETRY_AFTER = timedelta(minutes=1)
CONFIG = """[gateway]
conduct_address = conduct@example.org
staff = Alice Example <alice@example.org>
executive_director = Erin Director <ed@example.org>
[outbound]
smarthost = 127.0.0.1:1
tls = none
"""


def raw_message(message_id: str) -> bytes:
    # CRLF lines, a line that needs dot-stuffing and 8-bit text: all must arrive unchanged.
    return (
        f"From: Conduct <conduct@example.org>\r\nTo: r@example.net\r\n"
        f"Message-ID: <{message_id}>\r\nSubject: Your report\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        "\r\n.a line that starts with a dot\r\nGrüße\r\n"
    ).encode()


def new_mail(
    message_id: str, *, sender: str = "bounces@example.org", route: str = "smarthost"
) -> outbox.NewMail:
    return outbox.NewMail(
        kind="ack",
        envelope_sender=sender,
        recipient="r@example.net",
        message_id=message_id,
        raw=raw_message(message_id),
        route=route,
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """An aiosmtpd handler that records accepted mail and can refuse on script."""

    def __init__(
        self, data_replies: list[str] | None = None, rcpt_reply: str | None = None
    ) -> None:
        self.data_replies = list(data_replies or [])
        self.rcpt_reply = rcpt_reply
        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.data_attempts = 0
        self.tls_used: list[bool] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        self.accepted.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        self.tls_used.append(session.ssl is not None)
        return "250 2.0.0 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        ok = (data.login, data.password) == (b"relay-user", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


class Sink:
    """A real smarthost on a free loopback port."""

    def __init__(self, recorder: Recorder, port: int | None = None, **smtp: Any) -> None:
        self.recorder = recorder
        self.port = port or free_port()
        self.controller = Controller(recorder, hostname="127.0.0.1", port=self.port, **smtp)

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def address(self) -> HostPort:
        return HostPort("127.0.0.1", self.port)


@pytest.fixture
def base_settings(tmp_path: Path) -> Settings:
    path = tmp_path / "gateway.ini"
    path.write_text(CONFIG, encoding="utf-8")
    return config.load(path)


def outbound(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, **changes))


def make_sender(
    db: Database, settings: Settings, clock: Clock, upstream: Any = None
) -> OutboxSender:
    return OutboxSender(lambda: settings, db, clock, upstream)


def enqueue(db: Database, mail: outbox.NewMail, now: datetime = NOW) -> int:
    with db.transaction() as session:
        return outbox.enqueue(session, mail, now)


def row(db: Database, mail_id: int) -> OutboxEntry:
    with db.transaction() as session:
        found = session.execute(select(OutboxEntry).where(OutboxEntry.id == mail_id)).scalar_one()
        session.expunge(found)
        return found


def once(sender: OutboxSender) -> int:
    return asyncio.run(sender.deliver_once())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smarthost.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_pending_mail_arrives_byte_identical_with_its_envelope_and_null_sender(
    db: Database, base_settings: Settings
) -> None:
    with Sink(Recorder()) as sink:
        first = enqueue(db, new_mail("one@example.org"))
        bounce = enqueue(db, new_mail("two@example.org", sender=""))
        sender = make_sender(db, outbound(base_settings, smarthost=sink.address), Clock(NOW))
        assert once(sender) == 2
    accepted = {content: (mail_from, rcpt) for mail_from, rcpt, content in sink.recorder.accepted}
    assert accepted == {
        raw_message("one@example.org"): ("bounces@example.org", ["r@example.net"]),
        raw_message("two@example.org"): ("<>", ["r@example.net"]),
    }
    for mail_id in (first, bounce):
        stored = row(db, mail_id)
        assert (stored.state, stored.attempts, stored.sent_at) == ("sent", 1, NOW)
    assert sender.delivered_total == 2
    assert once(sender) == 0


def test_a_blanked_row_is_failed_never_delivered_empty(
    db: Database, base_settings: Settings, tmp_path: Path
) -> None:
    maildir = tmp_path / "outgoing"
    settings = outbound(base_settings, smarthost=None, maildir=maildir)
    mail_id = enqueue(db, new_mail("purged@example.org"))
    with db.transaction() as session:
        entry = session.get(OutboxEntry, mail_id)
        assert entry is not None
        entry.raw, entry.recipient = None, ""  # as retention leaves a purged case's mail
    assert once(make_sender(db, settings, Clock(NOW))) == 1
    assert not (maildir / "new").exists() or list((maildir / "new").iterdir()) == []
    stored = row(db, mail_id)
    assert stored.state == "failed"
    assert "purged" in (stored.last_error or "")


def test_maildir_mode_writes_one_file_per_mail_into_new_with_exactly_the_bytes(
    db: Database, base_settings: Settings, tmp_path: Path
) -> None:
    maildir = tmp_path / "outgoing"
    settings = outbound(base_settings, smarthost=None, maildir=maildir)
    ids = [enqueue(db, new_mail(f"m{n}@example.org")) for n in range(3)]
    assert once(make_sender(db, settings, Clock(NOW))) == 3
    files = sorted((maildir / "new").iterdir())
    assert sorted(f.read_bytes() for f in files) == sorted(
        raw_message(f"m{n}@example.org") for n in range(3)
    )
    assert list((maildir / "tmp").iterdir()) == []
    assert (maildir / "cur").is_dir()
    assert all(row(db, mail_id).state == "sent" for mail_id in ids)


def test_a_down_smarthost_defers_with_back_off_and_the_mail_goes_out_once_it_is_up(
    db: Database, base_settings: Settings
) -> None:
    port = free_port()  # nothing listens here yet
    clock = Clock(NOW)
    sender = make_sender(db, outbound(base_settings, smarthost=HostPort("127.0.0.1", port)), clock)
    mail_id = enqueue(db, new_mail("down@example.org"))
    assert once(sender) == 1
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert stored.next_attempt_at == NOW + RETRY_AFTER
    assert stored.last_error
    assert once(sender) == 0  # not before its time
    with Sink(Recorder(), port=port) as sink:
        clock.now = NOW + RETRY_AFTER
        assert once(sender) == 1
        clock.now = NOW + timedelta(hours=3)
        assert once(sender) == 0
    assert [content for _, _, content in sink.recorder.accepted] == [
        raw_message("down@example.org")
    ]
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts, stored.last_error) == ("sent", 2, None)


def test_a_4xx_reply_is_retried_after_retry_after_and_then_delivered(
    db: Database, base_settings: Settings
) -> None:
    clock = Clock(NOW)
    with Sink(Recorder(data_replies=["451 4.3.0 try again later"])) as sink:
        sender = make_sender(db, outbound(base_settings, smarthost=sink.address), clock)
        mail_id = enqueue(db, new_mail("later@example.org"))
        once(sender)
        stored = row(db, mail_id)
        assert (stored.state, stored.next_attempt_at) == ("pending", NOW + RETRY_AFTER)
        assert "451" in (stored.last_error or "")
        clock.now = NOW + RETRY_AFTER
        once(sender)
    assert row(db, mail_id).state == "sent"
    assert sink.recorder.data_attempts == 2
    assert len(sink.recorder.accepted) == 1
    assert sender.deferred_total == 1


def test_a_5xx_reply_fails_the_mail_with_the_error_and_it_is_never_retried(
    db: Database, base_settings: Settings
) -> None:
    clock = Clock(NOW)
    with Sink(Recorder(rcpt_reply="550 5.1.1 mailbox unavailable")) as sink:
        sender = make_sender(db, outbound(base_settings, smarthost=sink.address), clock)
        mail_id = enqueue(db, new_mail("refused@example.org"))
        assert once(sender) == 1
        for later in (timedelta(hours=2), timedelta(days=10)):
            clock.now = NOW + later
            assert once(sender) == 0
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts) == ("failed", 1)
    assert "550" in (stored.last_error or "")
    assert "mailbox unavailable" in (stored.last_error or "")
    assert sink.recorder.accepted == []
    assert sender.failed_total == 1


def test_temporary_failures_give_up_after_five_days(db: Database, base_settings: Settings) -> None:
    settings = outbound(base_settings, smarthost=HostPort("127.0.0.1", free_port()))
    old = enqueue(db, new_mail("old@example.org"), NOW - timedelta(days=5))
    young = enqueue(db, new_mail("young@example.org"), NOW - timedelta(days=4))
    sender = make_sender(db, settings, Clock(NOW))
    assert once(sender) == 2
    gave_up = row(db, old)
    assert gave_up.state == "failed"
    assert "gave up" in (gave_up.last_error or "")
    assert row(db, young).state == "pending"
    assert sender.failed_total == 1


def test_required_starttls_without_an_offer_is_a_temporary_failure(
    db: Database, base_settings: Settings
) -> None:
    with Sink(Recorder()) as sink:
        settings = outbound(base_settings, smarthost=sink.address, tls="required")
        mail_id = enqueue(db, new_mail("plain@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert "STARTTLS" in (stored.last_error or "")
    assert sink.recorder.accepted == []


def test_opportunistic_tls_encrypts_when_offered_even_with_a_self_signed_certificate(
    db: Database, base_settings: Settings, certificate: tuple[Path, Path]
) -> None:
    with Sink(Recorder(), tls_context=server_tls(certificate)) as sink:
        settings = outbound(base_settings, smarthost=sink.address, tls="opportunistic")
        mail_id = enqueue(db, new_mail("tls@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    assert row(db, mail_id).state == "sent"
    assert sink.recorder.tls_used == [True]
    assert sink.recorder.accepted[0][2] == raw_message("tls@example.org")


def test_required_tls_verifies_the_certificate_and_defers_on_an_untrusted_one(
    db: Database, base_settings: Settings, certificate: tuple[Path, Path]
) -> None:
    with Sink(Recorder(), tls_context=server_tls(certificate)) as sink:
        settings = outbound(base_settings, smarthost=sink.address, tls="required")
        mail_id = enqueue(db, new_mail("untrusted@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert "CERTIFICATE_VERIFY_FAILED" in (stored.last_error or "")
    assert sink.recorder.accepted == []


def auth_sink(recorder: Recorder, **smtp: Any) -> Sink:
    return Sink(recorder, authenticator=recorder.authenticate, auth_required=True, **smtp)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_auth_uses_the_username_and_the_password_file_without_its_newline(
    db: Database, base_settings: Settings, tmp_path: Path
) -> None:
    password_file = tmp_path / "smarthost-password"
    password_file.write_text("s3cret\n", encoding="utf-8")
    with auth_sink(Recorder(), auth_require_tls=False) as sink:
        settings = outbound(
            base_settings,
            smarthost=sink.address,
            username="relay-user",
            password_file=password_file,
        )
        mail_id = enqueue(db, new_mail("auth@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    assert row(db, mail_id).state == "sent"
    assert sink.recorder.logins == [(b"relay-user", b"s3cret")]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_refused_credentials_defer_the_mail_instead_of_failing_it(
    db: Database, base_settings: Settings, tmp_path: Path
) -> None:
    password_file = tmp_path / "smarthost-password"
    password_file.write_text("wrong\n", encoding="utf-8")
    with auth_sink(Recorder(), auth_require_tls=False) as sink:
        settings = outbound(
            base_settings,
            smarthost=sink.address,
            username="relay-user",
            password_file=password_file,
        )
        mail_id = enqueue(db, new_mail("badauth@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts) == ("pending", 1)
    assert "535" in (stored.last_error or "")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_credentials_go_over_starttls_and_never_in_cleartext_unless_tls_is_none(
    db: Database, base_settings: Settings, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    password_file = tmp_path / "smarthost-password"
    password_file.write_text("s3cret\n", encoding="utf-8")
    with auth_sink(Recorder(), tls_context=server_tls(certificate)) as sink:
        settings = outbound(
            base_settings,
            smarthost=sink.address,
            tls="opportunistic",
            username="relay-user",
            password_file=password_file,
        )
        encrypted = enqueue(db, new_mail("auth-tls@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    assert row(db, encrypted).state == "sent"
    assert sink.recorder.tls_used == [True]
    with auth_sink(Recorder(), auth_require_tls=False) as plain:
        settings = outbound(settings, smarthost=plain.address)
        cleartext = enqueue(db, new_mail("auth-plain@example.org"))
        once(make_sender(db, settings, Clock(NOW)))
    assert row(db, cleartext).state == "pending"
    assert plain.recorder.logins == []


def test_a_crash_before_mark_sent_resends_once_with_the_same_message_id(
    db: Database, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mark_sent = outbox.mark_sent
    crashes: list[int] = []

    def crash_once(session: Any, mail: OutgoingMail, now: datetime) -> bool:
        if not crashes:
            crashes.append(mail.id)
            raise RuntimeError("process died after the smarthost's 250")
        return real_mark_sent(session, mail, now)

    monkeypatch.setattr(outbox, "mark_sent", crash_once)
    clock = Clock(NOW)
    with Sink(Recorder()) as sink:
        sender = make_sender(db, outbound(base_settings, smarthost=sink.address), clock)
        mail_id = enqueue(db, new_mail("twice@example.org"))
        assert once(sender) == 1
        assert row(db, mail_id).state == "pending"
        assert once(sender) == 0  # still leased to the "dead" attempt
        clock.now = NOW + CLAIM_LEASE
        assert once(sender) == 1
        for later in (timedelta(hours=1), timedelta(days=6)):
            clock.now = NOW + later
            assert once(sender) == 0
    assert crashes == [mail_id]
    assert [content for _, _, content in sink.recorder.accepted] == [
        raw_message("twice@example.org")
    ] * 2
    assert row(db, mail_id).state == "sent"


def stall_after_claim(
    monkeypatch: pytest.MonkeyPatch,
    sender: OutboxSender,
    clock: Clock,
    until: datetime,
    meanwhile: Any,
) -> None:
    """`sender`'s pass stalls right after its claim until `until`; `meanwhile` runs then."""
    real_claim = sender._claim

    def claim_then_stall(now: datetime) -> Any:
        due = real_claim(now)
        meanwhile()
        clock.now = until
        return due

    monkeypatch.setattr(sender, "_claim", claim_then_stall)


def test_a_pass_stalled_past_its_claim_does_not_resend_what_another_instance_sent(
    db: Database, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = NOW + CLAIM_LEASE + timedelta(minutes=1)
    with Sink(Recorder()) as sink:
        settings = outbound(base_settings, smarthost=sink.address)
        clock = Clock(NOW)
        stalled, other = make_sender(db, settings, clock), make_sender(db, settings, Clock(later))
        mail_id = enqueue(db, new_mail("stalled@example.org"))
        stall_after_claim(
            monkeypatch, stalled, clock, later, lambda: asyncio.run(other.deliver_once())
        )
        assert once(stalled) == 1
    assert [content for _, _, content in sink.recorder.accepted] == [
        raw_message("stalled@example.org")
    ]
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts, stored.sent_at) == ("sent", 1, later)
    assert stalled.delivered_total == 0


def test_a_pass_stalled_near_its_claim_s_end_renews_it_and_sends_once(
    db: Database, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little claim left for a whole attempt, but no one took the row: it is renewed,
    so no other instance can claim it while this one delivers."""
    resumed = NOW + CLAIM_LEASE - timedelta(minutes=5)
    with Sink(Recorder()) as sink:
        settings = outbound(base_settings, smarthost=sink.address)
        clock = Clock(NOW)
        stalled = make_sender(db, settings, clock)
        other = make_sender(db, settings, Clock(NOW + CLAIM_LEASE))
        mail_id = enqueue(db, new_mail("renewed@example.org"))
        stall_after_claim(monkeypatch, stalled, clock, resumed, lambda: None)
        real_attempt = stalled._attempt

        async def attempt_while_another_looks(mail: OutgoingMail, settings: Settings) -> Any:
            assert await other.deliver_once() == 0  # the renewed claim still stands
            return await real_attempt(mail, settings)

        monkeypatch.setattr(stalled, "_attempt", attempt_while_another_looks)
        assert once(stalled) == 1
    assert len(sink.recorder.accepted) == 1
    stored = row(db, mail_id)
    assert (stored.state, stored.sent_at) == ("sent", resumed)


def test_a_refusal_on_a_stale_copy_leaves_a_sent_post_sent_and_tells_no_moderator(
    db: Database, base_settings: Settings
) -> None:
    """The claim runs out while a list post is in flight; another instance delivers it.
    The stale attempt's permanent refusal must not mark it failed nor report it."""
    later = NOW + CLAIM_LEASE + timedelta(minutes=1)
    told: list[int] = []

    async def delivered(mail: OutgoingMail) -> DeliveryResult:
        return DeliveryResult("sent", 250, "ok")

    other = OutboxSender(lambda: base_settings, db, Clock(later), delivered)

    async def refused_after_the_other_sent(mail: OutgoingMail) -> DeliveryResult:
        assert await other.deliver_once() == 1
        return DeliveryResult("permanent", 550, "no such list")

    stale = OutboxSender(
        lambda: base_settings,
        db,
        Clock(NOW),
        refused_after_the_other_sent,
        upstream_failed=lambda session, mail, error, now: told.append(mail.id),
    )
    mail_id = enqueue(db, new_mail("post@example.org", route="upstream"))
    assert once(stale) == 1
    stored = row(db, mail_id)
    assert (stored.state, stored.attempts, stored.last_error) == ("sent", 1, None)
    assert told == []
    assert stale.failed_total == 0


def test_upstream_rows_go_to_the_injected_relay_and_not_the_smarthost(
    db: Database, base_settings: Settings
) -> None:
    handed: list[OutgoingMail] = []

    async def relay(mail: OutgoingMail) -> DeliveryResult:
        handed.append(mail)
        return DeliveryResult("sent", 250, "ok")

    with Sink(Recorder()) as sink:
        settings = outbound(base_settings, smarthost=sink.address)
        mail_id = enqueue(db, new_mail("post@lists.example.org", route="upstream"))
        once(make_sender(db, settings, Clock(NOW), relay))
    assert [(m.id, m.route, m.raw) for m in handed] == [
        (mail_id, "upstream", raw_message("post@lists.example.org"))
    ]
    assert row(db, mail_id).state == "sent"
    assert sink.recorder.accepted == []


def test_an_upstream_row_without_a_relay_or_with_a_failing_one_is_deferred(
    db: Database, base_settings: Settings
) -> None:
    async def broken(mail: OutgoingMail) -> DeliveryResult:
        raise ConnectionResetError("upstream went away")

    first = enqueue(db, new_mail("p1@lists.example.org", route="upstream"))
    once(make_sender(db, base_settings, Clock(NOW)))
    second = enqueue(db, new_mail("p2@lists.example.org", route="upstream"))
    once(make_sender(db, base_settings, Clock(NOW), broken))
    assert [row(db, mail_id).state for mail_id in (first, second)] == ["pending", "pending"]
    assert "ConnectionResetError" in (row(db, second).last_error or "")


def test_info_logs_name_the_outbox_id_and_message_id_but_no_address(
    db: Database, base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conduct_gateway")
    with Sink(Recorder()) as sink:
        mail_id = enqueue(db, new_mail("logged@example.org"))
        once(make_sender(db, outbound(base_settings, smarthost=sink.address), Clock(NOW)))
    [record] = [r for r in caplog.records if r.getMessage() == "delivered"]
    fields = record.__dict__["fields"]
    assert (fields["outbox_id"], fields["message_id"]) == (mail_id, "logged@example.org")
    assert "r@example.net" not in repr(fields)


def wait_for(condition: Any, seconds: float = 6.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


class Running:
    """A started sender on its own event loop thread, as `serve` runs it."""

    def __init__(self, sender: OutboxSender) -> None:
        self.sender = sender
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> OutboxSender:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sender.start(), self.loop).result(10)
        return self.sender

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sender.stop(), self.loop).result(40)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def running_sink() -> Iterator[Sink]:
    with Sink(Recorder()) as sink:
        yield sink


def real_clock() -> datetime:
    return datetime.now(UTC)


def test_notify_after_enqueue_hands_the_mail_to_the_smarthost_within_five_seconds(
    db: Database, base_settings: Settings, running_sink: Sink
) -> None:
    settings = outbound(base_settings, smarthost=running_sink.address)
    with Running(OutboxSender(lambda: settings, db, real_clock)) as sender:
        enqueue(db, new_mail("prompt@example.org"), real_clock())
        sender.notify()
        assert wait_for(lambda: len(running_sink.recorder.accepted) == 1)
    assert len(running_sink.recorder.accepted) == 1


def test_start_retries_pending_mail_at_once_whatever_its_back_off(
    db: Database, base_settings: Settings, running_sink: Sink
) -> None:
    mail_id = enqueue(db, new_mail("backlog@example.org"), real_clock())
    with db.transaction() as session:
        [claimed] = outbox.claim_due(session, real_clock(), timedelta(0))
        outbox.mark_retry(session, claimed, "451 earlier", real_clock() + timedelta(hours=1))
    settings = outbound(base_settings, smarthost=running_sink.address)
    with Running(OutboxSender(lambda: settings, db, real_clock)):
        assert wait_for(lambda: len(running_sink.recorder.accepted) == 1)
    assert row(db, mail_id).state == "sent"
