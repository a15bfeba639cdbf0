"""Several instances (issue 9): intake and list relay with one `serve` and with two, on PostgreSQL.

    .venv/bin/python bench/instances.py [--quick] [--clients 20]

The same closed-loop load (20 aiosmtplib clients, one persistent connection each, 4 KB
messages) goes either to one `conduct-gateway serve` or, split evenly, to two `serve`
processes sharing one PostgreSQL database and one secret (SPEC section 10). Two
workloads, each measured one, two, two, one (ABBA) in the same run:

- intake: reports to conduct@example.org, each committed to the inbox before the 250;
  the pipelines open a case per report and queue an acknowledgement and two staff
  copies, which the senders deliver to a bare aiosmtpd sink (the smarthost). The
  background work shares the instances' CPU with intake, as in production. For 15 s
  after each window, with the clients stopped, the run counts the reports the instances
  turn into cases and the mails they send per second (the backlog the window left),
  and samples how many of their connections wait for a row lock.
- relay: posts to dev@lists.example.org from members, checked against 10 bans and
  relayed before-queue to a bare aiosmtpd sink (the upstream list server).

Every window starts the instances on a fresh database (migrated beforehand) and stops
them afterwards, so no backlog leaks into the next window. PostgreSQL is the test
suite's (`CONDUCT_GATEWAY_TEST_PG`, default postgres@127.0.0.1:5432); the run creates
its databases and drops them at the end. CPU is reported per process as a share of one
core, PostgreSQL as the sum of its processes, and the whole machine's busy share.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "CONDUCT_GATEWAY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET = os.urandom(32)
PROCESS_SECONDS = 15.0  # after an intake window: cases opened and mails sent per second


# -- PostgreSQL -----------------------------------------------------------------------------


class Databases:
    """Fresh databases for the run, dropped at the end; a migrated template to copy."""

    def __init__(self) -> None:
        self.engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.prefix = f"cgw_bench_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.template: str | None = None

    def url(self, name: str) -> str:
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def create(self, directory: Path) -> str:
        name = f"{self.prefix}_{len(self.names)}"
        clause = f" TEMPLATE {self.template}" if self.template else ""
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        self.names.append(name)
        url = self.url(name)
        if self.template is None:
            database = c.prepare_database(instance_config(directory, url, 0, 0, 0))
            database.dispose()
            self.template = name
            return self.create(directory)
        return url

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in reversed(self.names):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as handle:
                    if handle.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


# -- instances ------------------------------------------------------------------------------


def instance_config(
    directory: Path, url: str, smtp_port: int, upstream_port: int, smarthost_port: int
) -> Path:
    from tests.gateway.gateway_setup import write_config

    directory.mkdir(parents=True, exist_ok=True)
    path = write_config(
        directory,
        url,
        smarthost=f"127.0.0.1:{smarthost_port}",
        upstream=f"127.0.0.1:{upstream_port}",
        protocol="smtp",
        smtp_port=smtp_port,
    )
    body = path.read_text().replace("[outbound]\n", "[outbound]\ntls = none\nretry_after = 1s\n")
    path.write_text(body)
    secret = directory / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return path


def load_bans(url: str, directory: Path) -> None:
    from rules.bans import parse_pattern
    from storage import bans

    database = c.prepare_database(instance_config(directory, url, 0, 0, 0))
    with database.transaction() as session:
        bans.add_many(
            session,
            patterns=[parse_pattern(t) for t in c.small_ban_texts()],
            list_address=None,
            reason="benchmark",
            created_by="bench",
            now=datetime.now(UTC),
        )
    database.dispose()


@contextmanager
def instances(
    work: Path, url: str, count: int, sink: c.Process, with_bans: bool
) -> Iterator[list[c.Process]]:
    """`count` serve processes on database `url`, started one after the other."""
    if with_bans:
        load_bans(url, work / "bans")
    started: list[c.Process] = []
    try:
        for n in range(count):
            config = instance_config(
                work / f"instance-{n}", url, c.free_port(), sink.port, sink.port
            )
            started.append(c.start_serve(config))
        yield started
    finally:
        for process in started:
            process.stop()
            if "Traceback" in process.log.read_text(errors="replace"):
                print(f"# WARNING: {process.log} has a traceback", file=sys.stderr)


# -- load -----------------------------------------------------------------------------------


@dataclass
class Window:
    instances: int
    result: c.LoadResult
    postgres_cpu: float = 0.0
    busy: float = 0.0  # share of the whole machine
    processed: float | None = None  # reports turned into cases per second, backlog only
    mailed: float | None = None  # mails handed to the smarthost per second, backlog only
    lock_waits: float = 0.0  # connections waiting for a row lock meanwhile, on average
    processing_cpu: float = 0.0  # the instances' CPU meanwhile, in cores


async def closed_loop(
    ports: list[int],
    clients: int,
    seconds: float,
    warmup: float,
    next_message: Callable[[], tuple[str, str, bytes]],
    servers: dict[str, c.Process],
) -> tuple[c.LoadResult, float, float]:
    """c.closed_loop over several ports (client i talks to ports[i % len(ports)]); also
    the CPU of PostgreSQL's processes and the machine's busy share in the window."""
    result = c.LoadResult(clients, seconds)
    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    marks: dict[str, float] = {}
    pg_start: dict[int, float] = {}
    pg_cpu = 0.0
    busy: list[tuple[float, float]] = []

    async def mark(at: float, sign: float) -> None:
        nonlocal pg_cpu
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        busy.append(machine_busy())
        result.client_cpu += sign * c.self_cpu_seconds()
        for name, process in servers.items():
            marks[name] = marks.get(name, 0.0) + sign * process.cpu()
        for pid in postgres_pids():
            try:
                cpu = c.cpu_seconds(pid)
            except OSError:
                continue
            if sign < 0:
                pg_start[pid] = cpu
            elif pid in pg_start:
                pg_cpu += cpu - pg_start[pid]

    await asyncio.gather(
        mark(window[0], -1.0),
        mark(window[1], 1.0),
        *(
            c._client(ports[n % len(ports)], window, window[1], next_message, result)
            for n in range(clients)
        ),
    )
    result.server_cpu = marks
    (busy0, total0), (busy1, total1) = busy
    return result, pg_cpu, (busy1 - busy0) / max(1, total1 - total0)


def reports() -> Callable[[], tuple[str, str, bytes]]:
    numbers = itertools.count()

    def next_message() -> tuple[str, str, bytes]:
        n = next(numbers)
        sender = f"reporter{n}.{time.monotonic_ns()}@example.net"
        return sender, c.CONDUCT_ADDRESS, c.message(sender, c.CONDUCT_ADDRESS, n, tag="r")

    return next_message


def posts() -> Callable[[], tuple[str, str, bytes]]:
    rng = random.Random(9)
    numbers = itertools.count()

    def next_message() -> tuple[str, str, bytes]:
        sender = c.member_address(rng)
        return sender, c.LIST_ADDRESS, c.message(sender, c.LIST_ADDRESS, next(numbers))

    return next_message


def progress(url: str) -> tuple[int, int]:
    """(inbox rows processed, outbox rows sent) so far."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            done = connection.execute(
                text("SELECT count(*) FROM inbox WHERE state = 'done'")
            ).scalar_one()
            sent = connection.execute(
                text("SELECT count(*) FROM outbox WHERE state = 'sent'")
            ).scalar_one()
    finally:
        engine.dispose()
    return int(done), int(sent)


def processing(
    url: str, seconds: float, running: list[c.Process]
) -> tuple[float, float, float, float]:
    """Reports processed (cases opened) and mails sent per second over `seconds` right
    after the load stops, while the instances work on the backlog the load left; and
    how many of the instances' connections were waiting for a row lock, on average
    (sampled from pg_stat_activity every 100 ms); and the instances' CPU, in cores."""
    engine = create_engine(url)
    waiting: list[int] = []
    try:
        done0, sent0 = progress(url)
        cpu0 = sum(p.cpu() for p in running)
        began = time.perf_counter()
        with engine.connect() as connection:
            while time.perf_counter() - began < seconds:
                waiting.append(
                    connection.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    ).scalar_one()
                )
                connection.rollback()
                time.sleep(0.1)
        done1, sent1 = progress(url)
        elapsed = time.perf_counter() - began
        cpu = (sum(p.cpu() for p in running) - cpu0) / elapsed
    finally:
        engine.dispose()
    return (
        (done1 - done0) / elapsed,
        (sent1 - sent0) / elapsed,
        sum(waiting) / len(waiting),
        cpu,
    )


def measure(
    work: Path,
    databases: Databases,
    workload: str,
    count: int,
    clients: int,
    seconds: float,
    sink: c.Process,
    process_seconds: float,
) -> Window:
    directory = work / f"{workload}-{count}-{len(databases.names)}"
    url = databases.create(work)
    intake = workload == "intake"
    with instances(directory, url, count, sink, with_bans=not intake) as running:
        servers = {"sink": sink} | {f"serve{n + 1}": p for n, p in enumerate(running)}
        result, pg_cpu, busy = asyncio.run(
            closed_loop(
                [p.port for p in running],
                clients,
                seconds,
                1.0,
                reports() if intake else posts(),
                servers,
            )
        )
        window = Window(count, result, pg_cpu, busy)
        if intake:
            (window.processed, window.mailed, window.lock_waits, window.processing_cpu) = (
                processing(url, process_seconds, running)
            )
    return window


# -- report ---------------------------------------------------------------------------------


def line(workload: str, window: Window) -> str:
    r = window.result
    other = _other(window.result, window.postgres_cpu, window.busy)
    drained = (
        ""
        if window.processed is None
        else f", then {window.processed:.1f} cases/s, {window.mailed:.1f} mails/s, "
        f"{window.lock_waits:.2f} waiting for a lock, serve CPU {100 * window.processing_cpu:.0f}%"
    )
    return (
        f"  {workload:<6} {window.instances} instance(s) {r.rate:7.1f} msg/s "
        f"p50 {r.ms(50):6.1f} ms p99 {r.ms(99):6.1f} ms errors {r.errors}{drained} | "
        f"CPU {c.cpu_text(r)}, postgres {100 * window.postgres_cpu / r.seconds:.0f}%; "
        f"machine busy {100 * window.busy:.0f}% (other processes {100 * other:.0f}%)"
    )


def _other(result: c.LoadResult, postgres_cpu: float, busy: float) -> float:
    """CPU of everything not measured (other work on the machine), in cores."""
    known = result.client_cpu + sum(result.server_cpu.values()) + postgres_cpu
    return max(0.0, busy * (os.cpu_count() or 1) - known / result.seconds)


def summary(rows: dict[str, dict[int, list[Window]]]) -> None:
    print(
        "| workload | one instance msg/s | p50 ms | p99 ms | two instances msg/s "
        "| p50 ms | p99 ms | two / one |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workload, runs in rows.items():
        one = c.merge([w.result for w in runs[1]])
        two = c.merge([w.result for w in runs[2]])
        print(
            f"| {workload} | {one.rate:.0f} | {one.ms(50):.1f} | {one.ms(99):.1f} "
            f"| {two.rate:.0f} | {two.ms(50):.1f} | {two.ms(99):.1f} | {two.rate / one.rate:.2f} |"
        )
    for workload, runs in rows.items():
        if workload != "intake":
            continue
        one = sum(w.processed or 0.0 for w in runs[1]) / len(runs[1])
        two = sum(w.processed or 0.0 for w in runs[2]) / len(runs[2])
        waits = {n: sum(w.lock_waits for w in runs[n]) / len(runs[n]) for n in runs}
        cpu = {n: sum(w.processing_cpu for w in runs[n]) / len(runs[n]) for n in runs}
        print()
        print(
            f"processing the intake backlog (cases opened, each with three mails queued): "
            f"one {one:.1f}/s, two {two:.1f}/s, two / one {two / one:.2f}; connections "
            f"waiting for a row lock on average: one {waits[1]:.2f}, two {waits[2]:.2f}; "
            f"serve CPU (all instances, share of one core): one {100 * cpu[1]:.0f}%, "
            f"two {100 * cpu[2]:.0f}%"
        )
    print()
    print(f"CPU during the windows (share of one core; the machine has {os.cpu_count()} cores):")
    for workload, runs in rows.items():
        for count in (1, 2):
            windows = runs[count]
            merged = c.merge([w.result for w in windows])
            pg = sum(w.postgres_cpu for w in windows) / merged.seconds
            busy = sum(w.busy for w in windows) / len(windows)
            other = _other(merged, pg * merged.seconds, busy)
            print(
                f"  {workload} x{count}: {c.cpu_text(merged)}, postgres {100 * pg:.0f}%; "
                f"machine busy {100 * busy:.0f}% (other processes {100 * other:.0f}%)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, for a smoke test")
    parser.add_argument("--clients", type=int, default=20, help="concurrent SMTP clients")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 8.0
    process_seconds = 4.0 if args.quick else PROCESS_SECONDS
    c.header(f"several instances: one serve vs two on one PostgreSQL, {args.clients} clients, 4 KB")
    databases = Databases()
    rows: dict[str, dict[int, list[Window]]] = {}
    with c.workdir("instances") as work:
        sink = c.start_server("sink", c.free_port(), work)
        try:
            for workload in ("intake", "relay"):
                rows[workload] = {1: [], 2: []}
                for count in (1, 2, 2, 1):
                    window = measure(
                        work,
                        databases,
                        workload,
                        count,
                        args.clients,
                        seconds,
                        sink,
                        process_seconds,
                    )
                    rows[workload][count].append(window)
                    print(line(workload, window), flush=True)
        finally:
            sink.stop()
            databases.drop_all()
    print()
    summary(rows)


if __name__ == "__main__":
    main()
