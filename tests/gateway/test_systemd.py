"""The systemd unit (verify, exposure) and a real `serve` speaking the notify protocol."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import sd_notify
from gateway.smtp_ingress import DRAIN_SECONDS
from tests.components import free_port, missing
from tests.gateway.gateway_setup import write_config
from tests.serve_process import ServeProcess, cli
from tests.sinks import Sink

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "conduct-gateway.service"
SYSUSERS = ROOT / "systemd" / "conduct-gateway.sysusers"
OPERATIONS = ROOT / "docs" / "operations.md"
SPEC_EXPOSURE = 2.5  # SPEC section 10
EXIT_BOUND = DRAIN_SECONDS + 10  # SIGTERM to exit, SMTP drain included
REPORT = (
    b"From: rita@example.net\r\nTo: conduct@example.org\r\nSubject: Harassment\r\n"
    b"Message-ID: <sd-report@example.net>\r\n\r\nSomeone was rude at the meetup.\r\n"
)


def analyze(unit: Path, *args: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("systemd-analyze")
    if program is None:
        missing("systemd-analyze", "install the Debian package systemd")
    return subprocess.run(
        [program, *args, str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        check=False,
        timeout=120,
    )


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart at this venv's command: verify insists the program exists."""
    command = Path(sys.executable).parent / "conduct-gateway"
    assert command.exists(), "pip install -e . makes the conduct-gateway command"
    text = UNIT.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={command}", text)
    assert count == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def test_the_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    result = analyze(unit_copy, "verify", "--man=no")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_the_unit_exposure_is_at_most_2_5_and_is_the_one_documented(unit_copy: Path) -> None:
    threshold = int(SPEC_EXPOSURE * 10)
    result = analyze(unit_copy, "security", "--offline=true", f"--threshold={threshold}")
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found is not None, result.stdout
    assert float(found.group(1)) <= SPEC_EXPOSURE
    assert f"exposure level {found.group(1)}" in OPERATIONS.read_text(encoding="utf-8")


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_type_notify_with_its_own_user_and_one_capability() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["User"] == unit["Group"] == ["conduct-gateway"]
    assert unit["CapabilityBoundingSet"] == unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert "PrivateUsers" not in unit  # it would void the capability for port 25
    # The sysusers.d snippet makes that user, at home in the state directory.
    entry = next(
        line for line in SYSUSERS.read_text(encoding="utf-8").splitlines() if line.startswith("u ")
    )
    assert entry.split()[1] == "conduct-gateway"
    assert entry.split()[-1] == f"/var/lib/{unit['StateDirectory'][0]}"


@dataclass(frozen=True)
class Datagram:
    text: str
    pid: int


class NotifySocket:
    """What systemd binds for a Type=notify unit: a datagram socket, sender credentials on."""

    def __init__(self, path: str | None = None) -> None:
        self.name = path or f"@conduct-gateway-test-{secrets.token_hex(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name[1:] if self.name.startswith("@") else self.name)
        self.received: list[Datagram] = []

    def receive(self, timeout: float) -> Datagram | None:
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = next(
            struct.unpack("3i", cdata)[0]
            for level, kind, cdata in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        )
        datagram = Datagram(data.decode(), pid)
        self.received.append(datagram)
        return datagram

    def wait_for(self, line: str, timeout: float) -> Datagram:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            datagram = self.receive(left)
            if datagram is not None and line in datagram.text.splitlines():
                return datagram
        raise AssertionError(f"{line!r} not sent in {timeout}s: {self.received}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


@dataclass
class Ports:
    smtp: int
    policy: int
    metrics: int


def configure(tmp_path: Path) -> tuple[Path, Ports]:
    ports = Ports(free_port(), free_port(), free_port())
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        smtp_port=ports.smtp,
        extra=f"[policy]\nlisten = 127.0.0.1:{ports.policy}\n"
        f"[metrics]\nlisten = 127.0.0.1:{ports.metrics}\n",
    )
    return config, ports


def serve_env(notify: NotifySocket | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.name
    return {**env, **extra}


def launch(config: Path, env: dict[str, str]) -> ServeProcess:
    serve = ServeProcess(config)
    serve.env = {**env, "PYTHONUNBUFFERED": "1"}  # without the inherited NOTIFY_SOCKET
    return serve.launch()


class RawSmtp:
    """An SMTP client that sends one command at a time and reads what the server says."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.lines = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        assert self.command(b"EHLO client.example.net").startswith(b"250")

    def reply(self) -> bytes:
        """One reply, every line of it; b"" once the server closed the connection."""
        data = b""
        while line := self.lines.readline():
            data += line
            if line[3:4] != b"-":
                break
        return data

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def refuses_connections(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def wait_ready(serve: ServeProcess, notify: NotifySocket) -> Datagram:
    try:
        return notify.wait_for("READY=1", 60)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{serve.log}") from None


def wait_exit(serve: ServeProcess, since: float) -> int:
    assert serve.process is not None
    code = serve.process.wait(EXIT_BOUND)
    assert time.monotonic() - since < EXIT_BOUND
    return code


def test_ready_once_every_listener_accepts_then_stopping_and_exit_0(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config, ports = configure(tmp_path)
    serve = launch(config, serve_env(notify_socket))
    try:
        ready = wait_ready(serve, notify_socket)
        for port in (ports.smtp, ports.policy, ports.metrics):  # right after READY=1, no retry
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=30) as client:
            assert client.noop()[0] == 250
        assert serve.process is not None
        assert ready.pid == serve.process.pid  # NotifyAccess=main accepts it
        assert notify_socket.received[0].text == "STATUS=preparing storage"
        assert "STATUS=serving" in ready.text.splitlines()
        idle = RawSmtp(ports.smtp)
        stopped_at = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", 10)
        assert idle.reply().startswith(b"421 4.3.2")  # the idle client is told, not cut off
        assert idle.reply() == b""
        idle.close()
        assert wait_exit(serve, stopped_at) == 0
        assert "event=stopped" in serve.log
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill()


def test_sigterm_lets_a_transaction_in_flight_finish(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config, ports = configure(tmp_path)
    serve = launch(config, serve_env(notify_socket))
    try:
        wait_ready(serve, notify_socket)
        client = RawSmtp(ports.smtp)
        assert client.command(b"MAIL FROM:<rita@example.net>").startswith(b"250")
        assert client.command(b"RCPT TO:<conduct@example.org>").startswith(b"250")
        assert serve.process is not None
        stopped_at = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", 10)
        # The listener closes while the transaction in flight goes on.
        assert refuses_connections(ports.smtp, DRAIN_SECONDS / 2)
        assert client.command(b"DATA").startswith(b"354")
        assert client.command(REPORT + b".").startswith(b"250")
        assert client.reply().startswith(b"421 4.3.2")  # then the drain closes it
        client.close()
        assert wait_exit(serve, stopped_at) == 0
        with closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
            stored = db.execute("SELECT message_id FROM inbox").fetchall()
        assert stored == [("sd-report@example.net",)]  # the 250 was kept
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill()


def test_watchdog_pings_keep_coming_within_watchdog_usec(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """systemd kills a unit that stays silent for WATCHDOG_USEC: every wait here is bounded
    by that period, the contract, never by how fast a ping comes (it is sent each half)."""
    period = 2.0
    config, _ = configure(tmp_path)
    serve = launch(config, serve_env(notify_socket, WATCHDOG_USEC=str(int(period * 1e6))))
    try:
        wait_ready(serve, notify_socket)
        pings = [notify_socket.wait_for("WATCHDOG=1", period) for _ in range(5)]
        assert serve.process is not None
        assert {ping.pid for ping in pings} == {serve.process.pid}
        assert serve.stop(EXIT_BOUND) == 0
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill()


def test_without_notify_socket_serve_sends_nothing_and_runs(tmp_path: Path) -> None:
    config, ports = configure(tmp_path)
    serve = launch(config, serve_env(None, WATCHDOG_USEC="1000000"))
    try:
        serve.wait_for_log("event=ready", 60)
        with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=30) as client:
            assert client.noop()[0] == 250
        time.sleep(1.2)  # two watchdog periods without a socket to ping
        assert serve.stop(EXIT_BOUND) == 0
        assert "sd-notify-failed" not in serve.log
        assert "event=stopped" in serve.log
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill()


# PR_SET_MDWE (Linux 6.3): the kernel's MemoryDenyWriteExecute, kept across execve.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
    "    sys.exit(77)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def test_serve_works_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: CPython, re2, libpq and OpenSSL never need W^X pages."""
    wrapper = [sys.executable, "-c", MDWE_EXEC]
    probe = subprocess.run(
        [*wrapper, "-c", "import ctypes; print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 77:
        missing("PR_SET_MDWE", "the kernel has none (Linux 6.3 and later)")
    assert probe.stdout.strip() == "1"  # the flag holds in the exec'd interpreter
    smarthost, upstream = Sink().start(), Sink().start()
    port = free_port()
    config = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        smtp_port=port,
    )
    config.write_text(config.read_text().replace("[outbound]\n", "[outbound]\ntls = none\n"))
    (tmp_path / "secret").write_bytes(os.urandom(32))
    assert cli(config, "db", "upgrade").returncode == 0
    assert cli(config, "bans", "add", r"re:spam[0-9]+@example\.net").returncode == 0
    serve = ServeProcess(config, interpreter=wrapper).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("rita@example.net", ["conduct@example.org"], REPORT)
            post = b"From: poster@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
            assert client.sendmail("poster@example.net", ["dev@lists.example.org"], post) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("spam42@example.net", ["dev@lists.example.org"], post)
        smarthost.wait_for(lambda m: len(m) >= 3, 30)  # acknowledgement and staff copies
        upstream.wait_for(lambda m: len(m) == 1, 10)
        assert serve.stop(EXIT_BOUND) == 0
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill()
        smarthost.stop()
        upstream.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A socket path must fit in sun_path (108 bytes); pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_name(short_dir: Path) -> None:
    for listener in (NotifySocket(str(short_dir / "notify")), NotifySocket()):
        try:
            assert sd_notify.notify("READY=1\nSTATUS=x", {"NOTIFY_SOCKET": listener.name})
            datagram = listener.receive(5)
            assert datagram == Datagram("READY=1\nSTATUS=x", os.getpid())
        finally:
            listener.close()


@pytest.mark.parametrize("value", [None, "", "relative/path", "vsock:2:1234"])
def test_notify_without_a_usable_socket_sends_nothing(value: str | None) -> None:
    environ = {} if value is None else {"NOTIFY_SOCKET": value}
    assert sd_notify.notify("READY=1", environ) is False


def test_notify_to_a_socket_nobody_binds_fails_quietly(short_dir: Path) -> None:
    assert sd_notify.notify("READY=1", {"NOTIFY_SOCKET": str(short_dir / "gone")}) is False


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    environ: dict[str, str], expected: float | None
) -> None:
    assert sd_notify.watchdog_interval(environ, pid=4242) == expected
