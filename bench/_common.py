"""Shared pieces of the benchmarks: processes, a real `serve`, SMTP clients, statistics.

Every benchmark compares the gateway with a baseline measured in the same run, and
prints ratios: absolute numbers on a shared 2-core machine say little on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.db import Database

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.gateway.gateway_setup, gateway, storage, rules

PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIST_ADDRESS = "dev@lists.example.org"
CONDUCT_ADDRESS = "conduct@example.org"


def command_line() -> str:
    """The exact command that produced the numbers, for the report."""
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# command: {command_line()}")
    print(f"# date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"# host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def self_cpu_seconds() -> float:
    return time.process_time()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch directory on the same disk for the gateway and its baseline."""
    path = Path(tempfile.mkdtemp(prefix=f"conduct-bench-{prefix}-"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


class Process:
    """A child process whose output goes to a file; stopped with SIGTERM."""

    def __init__(self, args: list[str], log: Path, cwd: Path | None = None, port: int = 0) -> None:
        self.args = args
        self.port = port
        self.log = log
        self._handle = log.open("w")
        self.popen = subprocess.Popen(
            args,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.args[:4]}: {needle!r} not seen:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()


def start_server(mode: str, port: int, directory: Path, *extra: str) -> Process:
    """One of bench/_servers.py's bare aiosmtpd servers, in its own process."""
    process = Process(
        [PYTHON, str(BENCH / "_servers.py"), mode, "--port", str(port), *extra],
        directory / f"{mode}-{port}.log",
        port=port,
    )
    process.wait_for("ready")
    return process


def gateway_config(
    directory: Path, *, smtp_port: int, upstream_port: int, smarthost_port: int
) -> Path:
    """The integration tests' configuration (SQLite, WAL, synchronous=FULL), log level info."""
    from tests.gateway.gateway_setup import write_config

    path = write_config(
        directory,
        f"sqlite:///{directory / 'gateway.db'}",
        smarthost=f"127.0.0.1:{smarthost_port}",
        upstream=f"127.0.0.1:{upstream_port}",
        protocol="smtp",
        smtp_port=smtp_port,
    )
    text = path.read_text().replace("[outbound]\n", "[outbound]\ntls = none\nretry_after = 1s\n")
    path.write_text(text)
    return path


def prepare_database(config: Path) -> Database:
    """Schema and secret, as `serve` would make them; returns the Database."""
    import logging

    from gateway import config as config_module
    from gateway.daemon import prepare

    logging.getLogger("conduct_gateway").setLevel(logging.ERROR)  # serve logs the warnings
    settings = config_module.load(config)
    database, _secrets = prepare(settings)
    return database


def start_serve(config: Path, without: tuple[str, ...] = ()) -> Process:
    """A real `conduct-gateway serve` (python -m gateway serve), its log in a file.

    With `without`, bench/_serve_partial.py instead: the same components minus those named.
    """
    command = [PYTHON, "-m", "gateway", "serve", "-c", str(config)]
    if without:
        command = [PYTHON, str(BENCH / "_serve_partial.py"), str(config)]
        command += [f"--without={name}" for name in without]
    from gateway import config as config_module

    port = config_module.load(config).smtp.listen.port
    process = Process(command, config.parent / "serve.log", cwd=ROOT, port=port)
    process.wait_for("event=ready")
    return process


# -- the ban set of issue 3 ------------------------------------------------------------


def ban_texts(exact: int, domains: int, regexes: int) -> list[str]:
    """`exact` addresses, `domains` domain bans (half `*@d`, half `*@*.d`), `regexes` regexes."""
    texts = [f"user{i}@banned{i % 997}.example.net" for i in range(exact)]
    texts += [f"*@spam{i}.example.com" for i in range(domains // 2)]
    texts += [f"*@*.junk{i}.example.org" for i in range(domains - domains // 2)]
    templates = (
        r"re:[a-z0-9._-]*promo{i}[0-9]*@.*",
        r"re:.*@mail[0-9]+\.bulk{i}\.example",
        r"re:x{i}-[a-z]+@[a-z]+\.example\.info",
        r"re:(casino|pills|loans){i}[a-z]*@.*\.example",
    )
    texts += [templates[i % len(templates)].format(i=i) for i in range(regexes)]
    return texts


def small_ban_texts() -> list[str]:
    """Ten bans drawn from the big set: 6 exact, 2 domain, 2 regex."""
    return ban_texts(6, 2, 2)


def banned_address(rng: random.Random, exact: int, domains: int, regexes: int) -> str:
    """An address one of the big set's bans catches, in the variants senders use."""
    kind = rng.random()
    if kind < 0.6:
        i = rng.randrange(exact)
        local, domain = f"user{i}", f"banned{i % 997}.example.net"
        variant = rng.randrange(3)
        if variant == 1:
            local = local.capitalize() + "+list"
            domain = domain.upper()
        elif variant == 2:
            local = f"prvs=1234abcd={local}"
        return f"{local}@{domain}"
    if kind < 0.75:
        return f"anyone{rng.randrange(10**6)}@spam{rng.randrange(domains // 2)}.example.com"
    if kind < 0.9:
        depth = ".".join("sub" for _ in range(rng.randrange(1, 4)))
        return f"bob@{depth}.junk{rng.randrange(domains - domains // 2)}.example.org"
    i = rng.randrange(regexes)
    return [
        f"bigpromo{i}77@anywhere.test",
        f"carl@mail42.bulk{i}.example",
        f"x{i}-news@letters.example.info",
        f"casino{i}royal@win.example",
    ][i % 4]


def member_address(rng: random.Random) -> str:
    """A permitted sender: caught by no ban of the set."""
    i = rng.randrange(5000)
    local = f"member{i}" + ("+lists" if i % 5 == 0 else "")
    return f"{local}@community{i % 50}.example"


# -- messages ----------------------------------------------------------------------------

_BODY_LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"


def message(sender: str, recipient: str, number: int, size: int = 4096, tag: str = "b") -> bytes:
    """A plain text message of exactly `size` bytes with a unique Message-ID."""
    head = (
        f"From: Bench Sender <{sender}>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: benchmark message {number}\r\n"
        f"Message-ID: <{tag}{number}.{os.getpid()}.{time.time_ns()}@bench.example>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    room = size - len(head)
    lines = max(0, (room - 2) // len(_BODY_LINE))
    rest = room - lines * len(_BODY_LINE)
    return head + _BODY_LINE * lines + b"x" * (rest - 2) + b"\r\n"


# -- closed-loop SMTP clients --------------------------------------------------------------


@dataclass
class LoadResult:
    clients: int
    seconds: float
    completed: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, completed in the window
    error_texts: list[str] = field(default_factory=list)  # the first few, for the report
    client_cpu: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def _client(
    port: int,
    window: tuple[float, float],
    stop_at: float,
    next_message: Callable[[], tuple[str, str, bytes]],
    result: LoadResult,
) -> None:
    import aiosmtplib

    start, end = window
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120, start_tls=False)
    await client.connect()
    try:
        while time.perf_counter() < stop_at:
            sender, recipient, data = next_message()
            began = time.perf_counter()
            try:
                await client.sendmail(sender, [recipient], data)
            except aiosmtplib.SMTPException as error:
                result.errors += 1
                if len(result.error_texts) < 3:
                    result.error_texts.append(f"{type(error).__name__}: {error}"[:200])
                if not client.is_connected:
                    await client.connect()
                continue
            done = time.perf_counter()
            if start <= done < end:
                result.completed += 1
                result.latencies.append(done - began)
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()


async def closed_loop(
    port: int,
    clients: int,
    seconds: float,
    warmup: float,
    next_message: Callable[[], tuple[str, str, bytes]],
    servers: dict[str, Process],
) -> LoadResult:
    """`clients` connections, each sending its next message as soon as the last is answered
    (one persistent connection per client, one transaction after another). Messages
    answered inside the window [warmup, warmup + seconds] are counted."""
    result = LoadResult(clients, seconds)
    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    cpu_marks: dict[str, float] = {}

    async def mark(at: float, sign: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        result.client_cpu += sign * self_cpu_seconds()
        for name, process in servers.items():
            cpu_marks[name] = cpu_marks.get(name, 0.0) + sign * process.cpu()

    await asyncio.gather(
        mark(window[0], -1.0),
        mark(window[1], 1.0),
        *(_client(port, window, window[1], next_message, result) for _ in range(clients)),
    )
    result.server_cpu = cpu_marks
    return result


def cpu_text(result: LoadResult) -> str:
    """CPU used during the window, as a share of one core, per process."""
    parts = [f"client {100 * result.client_cpu / result.seconds:.0f}%"]
    parts += [f"{n} {100 * c / result.seconds:.0f}%" for n, c in result.server_cpu.items()]
    return ", ".join(parts)


def merge(results: list[LoadResult]) -> LoadResult:
    """The windows of one load level taken together (throughput over their summed time)."""
    merged = LoadResult(results[0].clients, sum(r.seconds for r in results))
    for r in results:
        merged.completed += r.completed
        merged.errors += r.errors
        merged.latencies += r.latencies
        merged.client_cpu += r.client_cpu
        for name, cpu in r.server_cpu.items():
            merged.server_cpu[name] = merged.server_cpu.get(name, 0.0) + cpu
    return merged


def line(clients: int, name: str, result: LoadResult, note: str = "") -> str:
    text = (
        f"  {clients:>2} clients {name:<8} {result.rate:7.1f} msg/s "
        f"p50 {result.ms(50):6.1f} ms p99 {result.ms(99):6.1f} ms "
        f"errors {result.errors} | CPU {cpu_text(result)}{note}"
    )
    return "\n".join([text, *(f"     error: {e}" for e in result.error_texts)])


def ratio_table(
    rows: list[tuple[int, dict[str, list[LoadResult]]]], base_name: str, gate_name: str
) -> None:
    print(
        f"| clients | {base_name} msg/s | p50 ms | p99 ms "
        f"| {gate_name} msg/s | p50 ms | p99 ms | ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients, runs in rows:
        base, gate = merge(runs["baseline"]), merge(runs["gateway"])
        print(
            f"| {clients} | {base.rate:.0f} | {base.ms(50):.1f} | {base.ms(99):.1f} "
            f"| {gate.rate:.0f} | {gate.ms(50):.1f} | {gate.ms(99):.1f} "
            f"| {gate.rate / base.rate:.2f} |"
        )
    print()
    print("CPU during the windows (share of one core): ")
    for clients, runs in rows:
        base, gate = merge(runs["baseline"]), merge(runs["gateway"])
        print(
            f"  {clients:>2} clients: {base_name}: {cpu_text(base)}; {gate_name}: {cpu_text(gate)}"
        )
