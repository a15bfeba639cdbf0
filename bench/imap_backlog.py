"""IMAP watcher against a private Dovecot (issue 6): backlog ingest rate and APPEND latency.

    .venv/bin/python bench/imap_backlog.py [--quick] [--messages N] [--size KB] [--rounds R]
        [--postgresql]

Backlog: in each round two fresh users each have N messages (1,000 by default, 200 with
--quick; about 2 KB each, or --size KB) waiting in INBOX. The real `ImapWatcher` (lease,
login, one pass: FETCH BODY.PEEK[] in batches, commit each batch to the inbox with its
ImapSeen rows, MOVE, mark moved) takes in each backlog into a fresh database (SQLite in a
scratch directory, or with --postgresql a scratch database on the test suite's PostgreSQL),
timed from `start()` to the end of the pass. The baseline is a bare imapclient loop that
logs in, selects and only fetches the same messages, 50 per FETCH and as many per FETCH as
the watcher takes, run before and after the watchers (baseline, watcher, watcher, baseline:
ABBA); the ratio is of the totals over all rounds (2 by default). A bare loop with one
message per FETCH is shown for context.

Latency: a watcher and the inbox pipeline run together, as in `serve`, on a fresh user and
database; with the watcher idling, one message at a time is APPENDed by another
connection and timed until the watcher's inbox commit and until the pipeline has
committed the case it opened; 50 samples (10 with --quick). The floor is the same APPEND
seen as EXISTS by a bare IDLE client: Dovecot itself holds IDLE notifications back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from imapclient import IMAPClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway import config, logs
from gateway.daemon import prepare
from gateway.imap_ingest import BATCH_MESSAGES
from gateway.imap_watcher import ImapWatcher
from gateway.pipeline import Pipeline
from tests import dovecot
from tests.gateway.gateway_setup import write_config

PG_ADMIN_URL = os.environ.get(
    "CONDUCT_GATEWAY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
KINDS = ("bare-50", "bare-batch", "watcher", "floor", "bare-1")


def body(lines: int) -> bytes:
    return b"".join(
        b"Line %d of a report, about sixty characters long, as text.\r\n" % n for n in range(lines)
    )


BODY = body(30)  # about 2 KB a message; --size changes it


def _now() -> datetime:
    return datetime.now(UTC)


def message(n: int, tag: str) -> bytes:
    return (
        b"Return-Path: <rita@example.net>\r\nFrom: Rita <rita@example.net>\r\n"
        b"To: conduct@example.org\r\nSubject: Report %d\r\n"
        b"Message-ID: <bench-%s-%d@example.net>\r\n\r\n" % (n, tag.encode(), n)
    ) + BODY


def bare_fetch(server: dovecot.PrivateDovecot, user: str, folder: str, batch: int) -> float:
    """Seconds to log in, select and fetch every message's bytes `batch` at a time."""
    started = time.perf_counter()
    client = IMAPClient(dovecot.HOST, port=server.port, ssl=False, timeout=60)
    client.login(user, server.users[user])
    client.select_folder(folder, readonly=True)
    uids = sorted(client.search(["NOT", "DELETED"]))
    fetched = 0
    for start in range(0, len(uids), batch):
        data = client.fetch(uids[start : start + batch], ["BODY.PEEK[]"])
        fetched += sum(1 for item in data.values() if b"BODY[]" in item)
    client.logout()
    seconds = time.perf_counter() - started
    print(f"# bare fetch of {fetched} from {folder}, {batch} per FETCH: {seconds:.3f} s")
    return seconds


def durable_floor(server: dovecot.PrivateDovecot, user: str, work: Path) -> float:
    """Seconds for the least a watcher must do, and nothing else: log in, SELECT (read-write,
    to move), fetch `BATCH_MESSAGES` at a time, insert each batch into SQLite (WAL,
    synchronous=FULL) with one executemany and commit, then UID MOVE it. No parsing, no
    hashing, no ORM, no state rows, no second connection."""
    path = work / f"floor-{user}.db"
    store = sqlite3.connect(path, isolation_level=None)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("PRAGMA synchronous=FULL")
    store.execute("CREATE TABLE mail (uid INTEGER PRIMARY KEY, raw BLOB NOT NULL)")
    started = time.perf_counter()
    client = IMAPClient(dovecot.HOST, port=server.port, ssl=False, timeout=60)
    client.login(user, server.users[user])
    client.select_folder("INBOX")
    uids = sorted(client.search(["NOT", "DELETED"]))
    for start in range(0, len(uids), BATCH_MESSAGES):
        part = uids[start : start + BATCH_MESSAGES]
        data = client.fetch(part, ["BODY.PEEK[]"])
        store.execute("BEGIN IMMEDIATE")
        store.executemany(
            "INSERT INTO mail VALUES (?, ?)", [(uid, data[uid][b"BODY[]"]) for uid in part]
        )
        store.execute("COMMIT")
        client.move(part, "Processed")
    client.logout()
    seconds = time.perf_counter() - started
    store.close()
    print(f"# durable floor: {len(uids)} stored and moved: {seconds:.3f} s")
    return seconds


def bare_idle_latency(server: dovecot.PrivateDovecot, samples: int) -> list[float]:
    """APPEND to EXISTS on a bare client idling in INBOX, as the watcher does."""
    user = server.add_user()
    client = IMAPClient(dovecot.HOST, port=server.port, ssl=False, timeout=60)
    client.login(user, server.users[user])
    client.select_folder("INBOX")
    found = []
    with server.client(user) as appending:
        for n in range(samples):
            client.idle()
            time.sleep(0.2)  # idling a while before the APPEND, as the watcher is
            began = time.perf_counter()
            appending.append("INBOX", message(n, "bare"))
            while not any(r[1:2] == (b"EXISTS",) for r in client.idle_check(timeout=15)):
                pass
            found.append(time.perf_counter() - began)
            client.idle_done()
    client.logout()
    return found


class Logged(logging.Handler):
    """Sets `seen` when an event named `name` has the fields `wanted` asks for."""

    def __init__(self, logger: str, name: str, **wanted: object) -> None:
        super().__init__()
        self.logger, self.name, self.wanted = logs.get(logger), name, wanted
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        if record.getMessage() == self.name and all(
            fields.get(key) == value for key, value in self.wanted.items()
        ):
            self.seen.set()

    def __enter__(self) -> Logged:
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self)


class Databases:
    """A fresh database for each watcher: a scratch SQLite file or a scratch PostgreSQL one."""

    def __init__(self, postgresql: bool) -> None:
        self.engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.postgresql = postgresql
        self.names: list[str] = []

    def url(self, work: Path) -> str:
        if not self.postgresql:
            return f"sqlite:///{work / 'gateway.db'}"
        name = f"cgw_bench_imap_{uuid.uuid4().hex[:8]}"
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in self.names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


class Watching:
    """A real ImapWatcher for `user` (with the pipeline, as `serve` runs them, when asked),
    on its own event loop thread."""

    def __init__(
        self, work: Path, url: str, server: dovecot.PrivateDovecot, user: str, pipeline: bool
    ) -> None:
        work.mkdir()
        extra = (
            f"[imap]\nenabled = yes\nhost = {dovecot.HOST}\nport = {server.port}\n"
            f"security = none\nusername = {user}\npassword_file = imap-password\n"
        )
        path = write_config(work, url, extra=extra)
        (work / "imap-password").write_text(server.users[user] + "\n")
        (work / "secret").write_bytes(os.urandom(32))  # PostgreSQL: serve wants one made
        settings = config.load(path)
        self.database, secrets = prepare(settings)
        self.stored = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.pipeline = (
            Pipeline(lambda: settings, self.database, secrets, _now) if pipeline else None
        )

        def stored() -> None:
            self.stored.set()
            if self.pipeline is not None:
                self.pipeline.notify()

        self.watcher = ImapWatcher(lambda: settings, self.database, _now, stored)

    def start(self) -> None:
        self.thread.start()
        if self.pipeline is not None:
            asyncio.run_coroutine_threadsafe(self.pipeline.start(), self.loop).result(30)
        asyncio.run_coroutine_threadsafe(self.watcher.start(), self.loop).result(30)

    def ingest(self, expected: int) -> float:
        """Seconds from start() to the end of the pass that took in the backlog."""
        with Logged("imap", "imap-ingested", count=expected) as passed:
            started = time.perf_counter()
            self.start()
            if not passed.seen.wait(600):
                raise SystemExit("the backlog was not taken in within one pass")
            seconds = time.perf_counter() - started
        print(f"# watcher took in {expected}: {seconds:.3f} s")
        return seconds

    def latency(
        self, server: dovecot.PrivateDovecot, user: str, samples: int
    ) -> tuple[list[float], list[float]]:
        """(APPEND to inbox commit, APPEND to case committed) for each sample."""
        with Logged("imap", "imap-idling") as idling:
            self.start()
            if not idling.seen.wait(30):
                raise SystemExit("the watcher did not reach IDLE within 30 s")
        stored, opened = [], []
        with server.client(user) as appending:
            for n in range(samples):
                time.sleep(0.2)  # back in IDLE after the previous message's move
                self.stored.clear()
                wanted = f"bench-latency-{n}@example.net"
                with Logged("pipeline", "processed", message_id=wanted, rule="new-case") as case:
                    began = time.perf_counter()
                    appending.append("INBOX", message(n, "latency"))
                    if not self.stored.wait(15):
                        raise SystemExit("a message was not stored within 15 s")
                    stored.append(time.perf_counter() - began)
                    if not case.seen.wait(15):
                        raise SystemExit("a message did not open a case within 15 s")
                    opened.append(time.perf_counter() - began)
        return stored, opened

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.watcher.stop(), self.loop).result(60)
        if self.pipeline is not None:
            asyncio.run_coroutine_threadsafe(self.pipeline.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.database.dispose()


def backlog(server: dovecot.PrivateDovecot, count: int, tag: str) -> str:
    user = server.add_user()
    with server.client(user) as client:
        for n in range(count):
            client.append("INBOX", message(n, tag))
    return user


@contextmanager
def watching(
    work: Path, databases: Databases, server: dovecot.PrivateDovecot, user: str, pipeline: bool
) -> Iterator[Watching]:
    running = Watching(work, databases.url(work), server, user, pipeline)
    try:
        yield running
    finally:
        running.stop()


def one_round(
    server: dovecot.PrivateDovecot, work: Path, databases: Databases, count: int, tag: str
) -> dict[str, float]:
    """Seconds per kind: the bare loops (A), two watchers (B B), the bare loops again (A)."""
    first, second = backlog(server, count, f"{tag}a"), backlog(server, count, f"{tag}b")
    third = backlog(server, count, f"{tag}c")
    with server.client(third) as client:
        client.create_folder("Processed")
    spent = dict.fromkeys(KINDS, 0.0)

    def bare(user: str, folder: str) -> None:
        spent["bare-50"] += bare_fetch(server, user, folder, 50)
        spent["bare-batch"] += bare_fetch(server, user, folder, BATCH_MESSAGES)

    bare(first, "INBOX")
    for user in (first, second):
        with watching(work / user, databases, server, user, False) as running:
            spent["watcher"] += running.ingest(count)
    spent["floor"] += durable_floor(server, third, work)
    bare(second, "Processed")
    spent["bare-1"] = bare_fetch(server, first, "Processed", 1)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages, 10 samples")
    parser.add_argument("--size", type=int, default=2, help="KB per message (default 2)")
    parser.add_argument("--messages", type=int, help="backlog size (default 1,000)")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (default 2)")
    parser.add_argument("--postgresql", action="store_true", help="scratch PostgreSQL databases")
    args = parser.parse_args()
    count = args.messages or (200 if args.quick else 1000)
    global BODY
    BODY = body(max(1, args.size * 1024 // 60 - 4))
    samples = 10 if args.quick else 50
    why = dovecot.available()
    if why is not None:
        raise SystemExit(f"Dovecot is not available: {why}")
    c.header("IMAP watcher: backlog ingest against a bare imapclient fetch; APPEND latency")
    storage = "postgresql" if args.postgresql else "sqlite"
    print(
        f"# storage: {storage}; {count} messages of {len(message(0, 'x')):,} bytes per backlog;"
        f" watcher batch {BATCH_MESSAGES}"
    )
    databases = Databases(args.postgresql)
    totals = dict.fromkeys(KINDS, 0.0)
    try:
        with dovecot.private_dovecot() as server, c.workdir("imap") as work:
            for number in range(args.rounds):
                spent = one_round(server, work, databases, count, f"r{number}")
                totals = {kind: totals[kind] + spent[kind] for kind in totals}
            user = server.add_user()
            with watching(work / "latency", databases, server, user, True) as running:
                stored, opened = running.latency(server, user, samples)
            floor = bare_idle_latency(server, samples)
    finally:
        databases.drop_all()
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    report(count, args.rounds, totals, samples, [stored, opened, floor])


def report(
    count: int, rounds: int, totals: dict[str, float], samples: int, latencies: list[list[float]]
) -> None:
    watched = 2 * rounds * count  # each kind took in this many messages over the run
    rate = watched / totals["watcher"]
    print()
    print(f"| {rounds} rounds of 2 x {count} | messages/s | watcher / this |")
    print("| --- | ---: | ---: |")
    print(f"| watcher: fetch, commit, record, MOVE ({BATCH_MESSAGES} a batch) | {rate:,.0f} | |")
    for kind, label, messages in (
        ("bare-50", "bare fetch, 50 per FETCH", watched),
        ("bare-batch", f"bare fetch, {BATCH_MESSAGES} per FETCH", watched),
        ("floor", "durable floor: fetch, executemany, commit, MOVE", rounds * count),
        ("bare-1", "bare fetch, 1 per FETCH", rounds * count),
    ):
        bare_rate = messages / totals[kind]
        print(f"| {label} | {bare_rate:,.0f} | {rate / bare_rate:.2f} |")
    print()
    print(f"| APPEND to ..., {samples} messages | p50 ms | p99 ms |")
    print("| --- | ---: | ---: |")
    names = (
        "case opened (committed by the pipeline)",
        "inbox commit by the idling watcher",
        "EXISTS seen by a bare IDLE client",
    )
    for name, values in zip(names, latencies[1:2] + latencies[:1] + latencies[2:], strict=True):
        p50, p99 = statistics.median(values), c.percentile(values, 99)
        print(f"| {name} | {p50 * 1000:.0f} | {p99 * 1000:.0f} |")


if __name__ == "__main__":
    main()
