"""A real `serve` scraped over HTTP: SPEC section 10 metrics move; /healthz follows the database."""

from __future__ import annotations

import re
import smtplib
import socket
import sqlite3
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

from gateway.metrics import Metrics, route_label
from rules import tokens
from rules.routing import RoutingTable, route
from tests.components import free_port
from tests.conftest import PostgresServer
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


def start(tmp_path: Path, url: str) -> Running:
    smarthost = Sink().start()
    upstream = Sink().start()
    smtp_port = free_port()
    config = write_config(
        tmp_path,
        url,
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        smtp_port=smtp_port,
        # Port 0: the OS picks one, read back from the log (no race for a free port).
        extra="[metrics]\nlisten = 127.0.0.1:0\n",
    )
    config.write_text(config.read_text().replace("[outbound]\n", "[outbound]\ntls = none\n"))
    if not (tmp_path / "secret").exists():
        (tmp_path / "secret").write_bytes(b"s" * 32)
    serve = ServeProcess(config).start()
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
