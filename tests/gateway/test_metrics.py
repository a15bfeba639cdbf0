"""A real `serve` scraped over HTTP: SPEC section 10 metrics move; /healthz follows the database."""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.metrics import Metrics, route_label, staff_signed
from rules import tokens
from rules.routing import RoutingTable, route
from tests.components import free_port
from tests.conftest import PostgresServer
from tests.dovecot import PrivateDovecot, private_dovecot
from tests.gateway.gateway_setup import write_config
from tests.serve_process import ServeProcess, cli
from tests.sinks import Sink

# SPEC section 2: a stored message is processed within 5 s; the gauges that come from
# the database are refreshed every 2 s. Tests wait up to these bounds, never assert speed.
FIGURES_BOUND = 10.0
BAN_BOUND = 3.0
SPEC_NAMES = (
    "smtp_messages_total",
    "ban_hits_total",
    "relay_duration_seconds",
    "inbox_pending",
    "outbox_pending",
    "outbox_failed_total",
    "quarantined_total",
    "oldest_unacknowledged_case_seconds",
    "cases_open",
    "imap_connected",
    "scheduler_leader",
)
REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <metrics-rep1@example.net>\r\n"
    b"\r\nSomeone was rude to me after the talk.\r\n"
)
POST = (
    b"From: Poster <poster@example.net>\r\nTo: dev@lists.example.org\r\n"
    b"Subject: a question\r\nMessage-ID: <metrics-post1@example.net>\r\n"
    b"\r\nHow do I build the docs?\r\n"
)


TABLE = RoutingTable.build(
    conduct_address="conduct@example.org",
    local_domains=["example.org"],
    lists=["dev@lists.example.org"],
    list_domains=[],
    postmaster="hostmaster@example.org",
)


def conduct(detail: tokens.Detail) -> str:
    return tokens.subaddress_for("conduct@example.org", detail)


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("conduct@example.org", "report"),
        (conduct(tokens.Director()), "report"),
        ("conduct+no-such-thing@example.org", "report"),
        (conduct(tokens.Case(42)), "case"),
        (conduct(tokens.Signed(42, "a" * 20)), "case"),
        (conduct(tokens.Moderate()), "moderate"),
        (conduct(tokens.Confirm("b" * 26)), "moderate"),
        (conduct(tokens.Bounce("c" * 16)), "bounce"),
        ("dev@lists.example.org", "list"),
        ("dev-request@lists.example.org", "list"),
        ("nobody@example.org", "refused"),
        ("victim@elsewhere.example", "refused"),
        ("postmaster@example.org", None),
    ],
)
def test_the_smtp_route_label_is_the_kind_of_address(address: str, label: str | None) -> None:
    assert route_label(route(TABLE, address)) == label


SECRET = b"s" * 32
STAFF = ("alice@example.org", "bob@example.org", "ed@example.org")


def signed(case: int, who: str, secret: bytes = SECRET) -> str:
    return conduct(tokens.Signed(case, tokens.reply_token(secret, case, who)))


@pytest.mark.parametrize(
    ("address", "label"),
    [
        (signed(3, "alice@example.org"), "command"),
        (signed(3, "ed@example.org"), "command"),  # the director commands through theirs
        (signed(3, "Bob@Example.org"), "command"),  # tokens are made on the lower case
        (signed(3, "alice@example.org", b"o" * 32), "command"),  # the previous secret
        (signed(3, "rita@example.net"), "case"),  # a reporter's reply address
        (conduct(tokens.Signed(3, "a" * 20)), "case"),  # a token nobody was given
        (conduct(tokens.Case(3)), "case"),
    ],
)
def test_a_staff_members_signed_address_is_route_command(address: str, label: str) -> None:
    """Staff and the director command cases through their own signed address (SPEC 5)."""

    def commanders(detail: tokens.Signed) -> bool:
        return staff_signed(detail, STAFF, (SECRET, b"o" * 32))

    assert route_label(route(TABLE, address), commanders) == label


def test_conduct_mail_counts_once_by_its_most_specific_recipient() -> None:
    metrics = Metrics()
    routes = [route(TABLE, "conduct@example.org"), route(TABLE, conduct(tokens.Case(7)))]
    assert metrics.kept(routes, "250 2.0.0 Ok: queued as 1") == "250 2.0.0 Ok: queued as 1"
    metrics.kept(routes[:1], "451 4.3.0 Requested action aborted")
    metrics.rcpt_refused(route(TABLE, "dev@lists.example.org"), "452 4.5.3 Send separately")

    def value(route_name: str, verdict: str) -> float | None:
        return metrics.registry.get_sample_value(
            "conduct_gateway_smtp_messages_total", {"route": route_name, "verdict": verdict}
        )

    assert value("case", "accepted") == 1
    assert value("report", "accepted") == 0
    assert value("report", "deferred") == 1
    assert value("list", "rejected") == 0  # a 452 is not a decision: the client retries


@dataclass
class Running:
    serve: ServeProcess
    smarthost: Sink
    upstream: Sink
    smtp_port: int
    metrics_port: int
    config: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str) -> tuple[int, str, str]:
        """Status, Content-Type and body; an HTTP error status is returned, not raised."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as response:  # noqa: S310
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value from a fresh scrape; 0 when the series is not there yet."""
        status, _, body = self.get("/metrics")
        assert status == 200
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == "conduct_gateway_" + name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def wait_for_sample(
        self, name: str, accept: Callable[[float], bool], timeout: float, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout
        while True:
            value = self.sample(name, **labels)
            if accept(value):
                return value
            assert time.monotonic() < deadline, f"{name}{labels} stayed at {value}"
            time.sleep(0.2)

    def send(self, sender: str, recipients: list[str], data: bytes) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            return client.sendmail(sender, recipients, data)


def start(
    tmp_path: Path,
    url: str,
    *,
    extra: str = "",
    ban_action: str = "reject",
    interpreter: tuple[str, ...] = (sys.executable,),
    smarthost_answer: str = "250 2.0.0 Ok",
) -> Running:
    smarthost = Sink().start()
    smarthost.recorder.answer = smarthost_answer
    upstream = Sink().start()
    smtp_port = free_port()
    config = write_config(
        tmp_path,
        url,
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        smtp_port=smtp_port,
        ban_action=ban_action,
        # Port 0: the OS picks one, read back from the log (no race for a free port).
        extra="[metrics]\nlisten = 127.0.0.1:0\n" + extra,
    )
    config.write_text(config.read_text().replace("[outbound]\n", "[outbound]\ntls = none\n"))
    if not (tmp_path / "secret").exists():
        (tmp_path / "secret").write_bytes(SECRET)
    serve = ServeProcess(config, interpreter=interpreter).start()
    found = re.search(r"event=metrics-listening host=\S+ port=(\d+)", serve.log)
    assert found is not None, serve.log
    return Running(serve, smarthost, upstream, smtp_port, int(found.group(1)), config)


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[Running]:
    running = start(tmp_path, database_url)
    yield running
    assert running.serve.stop() == 0
    running.smarthost.stop()
    running.upstream.stop()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)  # the request ends here, complete or not
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_every_spec_metric_is_served_as_prometheus_text(gateway: Running) -> None:
    status, content_type, body = gateway.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name in SPEC_NAMES:
        family = families.get("conduct_gateway_" + name.removesuffix("_total"))
        assert family is not None, f"{name} is not served"
        assert family.samples, f"{name} has no sample"
    assert families["conduct_gateway_relay_duration_seconds"].type == "histogram"
    openmetrics = raw_request(
        gateway.metrics_port,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    )
    assert b"\r\nContent-Type: application/openmetrics-text" in openmetrics
    assert openmetrics.endswith(b"# EOF\n")
    assert gateway.sample("scheduler_leader") == 1.0  # the only instance leads
    assert gateway.sample("imap_connected") == 0.0  # no IMAP configured
    assert gateway.sample("oldest_unacknowledged_case_seconds") == 0.0  # no case yet


@pytest.mark.parametrize("backend", ["sqlite"])  # HTTP only: one backend is enough
def test_healthz_answers_ok_and_anything_else_is_refused(gateway: Running) -> None:
    assert gateway.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert gateway.get("/nowhere")[0] == 404
    assert gateway.get("/metrics/extra")[0] == 404
    assert gateway.get("/metrics?format=anything")[0] == 200
    posted = raw_request(gateway.metrics_port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert posted.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD\r\n" in posted


@pytest.mark.parametrize("backend", ["sqlite"])  # HTTP only: one backend is enough
def test_garbage_gets_400_and_the_server_keeps_answering(gateway: Running) -> None:
    assert raw_request(gateway.metrics_port, b"\x00\xffnot http at all\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )
    too_long = b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"
    assert raw_request(gateway.metrics_port, too_long).startswith(b"HTTP/1.1 400 ")
    assert raw_request(gateway.metrics_port, b"GET /healthz HTTP/1.1\r\n") == b""  # no end
    assert raw_request(gateway.metrics_port, b"") == b""
    assert gateway.get("/healthz")[0] == 200


def test_a_report_moves_the_smtp_counter_and_then_the_open_cases(gateway: Running) -> None:
    accepted = {"route": "report", "verdict": "accepted"}
    assert gateway.sample("smtp_messages_total", **accepted) == 0
    assert gateway.sample("cases_open", status="new") == 0
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    assert gateway.sample("smtp_messages_total", **accepted) == 1  # counted with the 250
    gateway.wait_for_sample("cases_open", lambda v: v == 1, FIGURES_BOUND, status="new")
    # No staff member has written on case 1 yet: it is the oldest unacknowledged one.
    gateway.wait_for_sample("oldest_unacknowledged_case_seconds", lambda v: v > 0, FIGURES_BOUND)
    gateway.wait_for_sample("inbox_pending", lambda v: v == 0, FIGURES_BOUND)


def test_a_refused_recipient_counts_as_refused_and_rejected(gateway: Running) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        gateway.send("a@example.com", ["victim@elsewhere.example"], POST)
    assert gateway.sample("smtp_messages_total", route="refused", verdict="rejected") == 1


def test_a_relayed_post_is_timed_and_a_banned_one_is_counted(gateway: Running) -> None:
    assert gateway.sample("relay_duration_seconds_count") == 0
    assert gateway.send("poster@example.net", ["dev@lists.example.org"], POST) == {}
    assert gateway.sample("relay_duration_seconds_count") == 1
    assert gateway.sample("smtp_messages_total", route="list", verdict="accepted") == 1

    added = cli(gateway.config, "bans", "add", "poster@example.net", "--reason", "spam")
    assert added.returncode == 0, added.stderr
    deadline = time.monotonic() + BAN_BOUND
    while True:  # the ban cache picks the new ban up within its refresh period
        try:
            gateway.send("poster@example.net", ["dev@lists.example.org"], POST)
        except smtplib.SMTPRecipientsRefused:
            break
        assert time.monotonic() < deadline, "the ban did not take effect"
        time.sleep(0.2)
    assert gateway.sample("ban_hits_total", identity="envelope") == 1
    assert gateway.sample("smtp_messages_total", route="list", verdict="rejected") == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_healthz_is_503_while_sqlite_is_locked_and_200_again_after(gateway: Running) -> None:
    """A write lock held longer than the probe's timeout: mail could not be committed."""
    path = make_url(_url_of(gateway.config)).database
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        status, _, body = gateway.get("/healthz")
        assert (status, body) == (503, "database unavailable\n")
        assert gateway.get("/metrics")[0] == 200  # a scrape never waits for the database
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + FIGURES_BOUND
    while gateway.get("/healthz")[0] != 200:
        assert time.monotonic() < deadline, "healthz did not recover"
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_healthz_is_503_once_the_postgresql_database_is_gone(
    tmp_path: Path, database_url: str, postgres: PostgresServer
) -> None:
    running = start(tmp_path, database_url)
    try:
        assert running.get("/healthz")[0] == 200
        name = make_url(database_url).database
        with postgres.engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        status, _, body = running.get("/healthz")
        assert (status, body) == (503, "database unavailable\n")
        assert running.get("/metrics")[0] == 200
    finally:
        # Stopping fails without a database (the scheduler releases its lease there):
        # any exit code will do here.
        running.serve.stop()
        running.smarthost.stop()
        running.upstream.stop()


def _url_of(config: Path) -> str:
    found = re.search(r"^url = (\S+)$", config.read_text(), re.MULTILINE)
    assert found is not None
    return found.group(1)


# --- each SPEC series seen moving over HTTP ------------------------------------------


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Running]]:
    """Gateways a test starts with its own options; each stopped (exit 0) at the end."""
    running: list[Running] = []
    yield running
    for gateway in running:
        assert gateway.serve.stop() == 0
        gateway.smarthost.stop()
        gateway.upstream.stop()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def ban(gateway: Running, pattern: str) -> None:
    added = cli(gateway.config, "bans", "add", pattern, "--reason", "spam")
    assert added.returncode == 0, added.stderr


def until_sample(gateway: Running, send: Callable[[], object], name: str, **labels: str) -> None:
    """Send until the series moves: a new ban takes effect within BAN_BOUND (SPEC 9)."""
    deadline = time.monotonic() + BAN_BOUND
    while gateway.sample(name, **labels) == 0:
        assert time.monotonic() < deadline, f"{name}{labels} did not move"
        with contextlib.suppress(smtplib.SMTPException):
            send()
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_mail_to_a_staff_signed_address_counts_as_route_command(gateway: Running) -> None:
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    gateway.wait_for_sample("cases_open", lambda v: v == 1, FIGURES_BOUND, status="new")
    note = (
        b"From: Alice Example <alice@example.org>\r\nSubject: Re: [Conduct #1]\r\n"
        b"Message-ID: <metrics-staff1@example.org>\r\n\r\n#status investigating\r\n"
    )
    assert gateway.send("alice@example.org", [signed(1, "alice@example.org")], note) == {}
    assert gateway.sample("smtp_messages_total", route="command", verdict="accepted") == 1
    reply = REPORT.replace(b"metrics-rep1@", b"metrics-rep2@")
    assert gateway.send("rita@example.net", [signed(1, "rita@example.net")], reply) == {}
    assert gateway.sample("smtp_messages_total", route="case", verdict="accepted") == 1
    assert gateway.sample("smtp_messages_total", route="command", verdict="accepted") == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_banned_from_and_sender_field_count_as_their_identities(gateway: Running) -> None:
    ban(gateway, "poster@example.net")
    by_from = POST.replace(b"<metrics-post1@", b"<metrics-from@")
    until_sample(
        gateway,
        lambda: gateway.send("other@example.net", ["dev@lists.example.org"], by_from),
        "ban_hits_total",
        identity="from",
    )
    by_sender = POST.replace(b"From: Poster <poster@example.net>", b"From: other@example.net")
    by_sender = b"Sender: poster@example.net\r\n" + by_sender
    with pytest.raises(smtplib.SMTPDataError):
        gateway.send("other@example.net", ["dev@lists.example.org"], by_sender)
    assert gateway.sample("ban_hits_total", identity="sender") == 1
    assert gateway.sample("ban_hits_total", identity="envelope") == 0
    assert gateway.sample("smtp_messages_total", route="list", verdict="rejected") >= 2


@pytest.mark.parametrize(("action", "verdict"), [("hold", "held"), ("discard", "discarded")])
def test_a_held_or_discarded_post_counts_under_its_verdict(
    tmp_path: Path, started: list[Running], action: str, verdict: str
) -> None:
    gateway = start(tmp_path, sqlite_url(tmp_path), ban_action=action)
    started.append(gateway)
    ban(gateway, "poster@example.net")
    until_sample(
        gateway,
        lambda: gateway.send("poster@example.net", ["dev@lists.example.org"], POST),
        "smtp_messages_total",
        route="list",
        verdict=verdict,
    )
    assert gateway.sample("smtp_messages_total", route="list", verdict="rejected") == 0
    assert gateway.sample("ban_hits_total", identity="envelope") >= 1


def test_mail_the_smarthost_refuses_for_good_counts_as_outbox_failed(
    tmp_path: Path, started: list[Running]
) -> None:
    gateway = start(tmp_path, sqlite_url(tmp_path), smarthost_answer="550 5.7.1 Refused")
    started.append(gateway)
    assert gateway.sample("outbox_failed_total") == 0
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)
    # The acknowledgement and the staff copies are each refused for good.
    gateway.wait_for_sample("outbox_failed_total", lambda v: v >= 1, FIGURES_BOUND)


# A fault injected into the running `serve`: processing fails for one marked message.
FAULTY_PIPELINE = (
    "import runpy, sys\n"
    "import gateway.pipeline as pipeline\n"
    "real = pipeline.process\n"
    "def process(*args, **kwargs):\n"
    "    if 'inject-fault' in (args[3].message_id or ''):\n"
    "        raise RuntimeError('injected fault')\n"
    "    return real(*args, **kwargs)\n"
    "pipeline.process = process\n"
    "sys.argv = ['conduct-gateway', *sys.argv[3:]]\n"  # after `-c CODE -m gateway`
    "runpy.run_module('gateway', run_name='__main__')\n"
)


def test_a_message_whose_processing_fails_counts_as_quarantined(
    tmp_path: Path, started: list[Running]
) -> None:
    interpreter = (sys.executable, "-c", FAULTY_PIPELINE)
    gateway = start(tmp_path, sqlite_url(tmp_path), interpreter=interpreter)
    started.append(gateway)
    assert gateway.sample("quarantined_total") == 0
    faulty = REPORT.replace(b"<metrics-rep1@", b"<inject-fault@")
    assert gateway.send("rita@example.net", ["conduct@example.org"], faulty) == {}
    gateway.wait_for_sample("quarantined_total", lambda v: v >= 1, FIGURES_BOUND)
    assert "event=quarantined" in gateway.serve.log
    gateway.send("rita@example.net", ["conduct@example.org"], REPORT)  # the others go on
    gateway.wait_for_sample("cases_open", lambda v: v == 1, FIGURES_BOUND, status="new")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    with private_dovecot() as server:
        yield server


@pytest.mark.dovecot
def test_imap_connected_is_1_while_the_watcher_holds_a_dovecot_session(
    tmp_path: Path, started: list[Running], dovecot: PrivateDovecot
) -> None:
    user = dovecot.add_user()
    (tmp_path / "imap-password").write_text(dovecot.users[user] + "\n")
    imap = (
        f"[imap]\nenabled = yes\nhost = 127.0.0.1\nport = {dovecot.port}\nsecurity = none\n"
        f"username = {user}\npassword_file = imap-password\n"
    )
    gateway = start(tmp_path, sqlite_url(tmp_path), extra=imap)
    started.append(gateway)
    gateway.wait_for_sample("imap_connected", lambda v: v == 1, FIGURES_BOUND)
    dovecot.stop()
    try:
        gateway.wait_for_sample("imap_connected", lambda v: v == 0, FIGURES_BOUND * 3)
    finally:
        dovecot.start()
