"""IMAP watcher against a private Dovecot (issue 6): backlog ingest rate and APPEND latency.

    .venv/bin/python bench/imap_backlog.py [--quick] [--messages N] [--url DATABASE_URL]

Backlog: two users each have N messages (about 2 KB, 1,000 by default; 200 with --quick)
waiting in INBOX. The real `ImapWatcher` (lease, login, one pass: FETCH BODY.PEEK[] in
batches of 50, commit each batch to the inbox with its ImapSeen rows, MOVE, mark moved)
takes in each backlog into a fresh database (SQLite in a scratch directory unless --url),
timed from `start()` to the end of the pass. The baseline is a bare imapclient loop that
logs in, selects and only fetches the same messages, 50 per FETCH, run before and after
(baseline, watcher, watcher, baseline); the ratio is of the totals. A bare loop with one
message per FETCH is shown for context.

Latency: with the watcher idling, one message at a time is APPENDed (by another
connection) and timed until the watcher's on_stored callback (its inbox commit); 50
samples (10 with --quick). The floor is the same APPEND seen as EXISTS by a bare IDLE
client: Dovecot itself holds IDLE notifications back for about half a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from imapclient import IMAPClient

from gateway import config, logs
from gateway.daemon import prepare
from gateway.imap_ingest import BATCH_MESSAGES
from gateway.imap_watcher import ImapWatcher
from tests import dovecot
from tests.gateway.gateway_setup import write_config

BODY = b"".join(
    b"Line %d of a report, about sixty characters long, as text.\r\n" % n for n in range(30)
)


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
    print(f"# bare fetch of {fetched} from {folder}, {batch} per FETCH: {seconds:.2f} s")
    return seconds


def bare_idle_latency(server: dovecot.PrivateDovecot, user: str, samples: int) -> list[float]:
    client = IMAPClient(dovecot.HOST, port=server.port, ssl=False, timeout=60)
    client.login(user, server.users[user])
    client.select_folder("Other")
    found = []
    for n in range(samples):
        client.idle()
        began = time.perf_counter()
        server.append(user, message(n, "bare"), folder="Other")
        while not any(r[1:2] == (b"EXISTS",) for r in client.idle_check(timeout=15)):
            pass
        found.append(time.perf_counter() - began)
        client.idle_done()
    client.logout()
    return found


class PassDone(logging.Handler):
    """Set when the watcher logs the end of a pass that took in `expected` messages."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        if record.getMessage() == "imap-ingested" and fields.get("count") == self.expected:
            self.done.set()


class Watching:
    """A real ImapWatcher for `user`, on its own event loop thread, as `serve` runs it."""

    def __init__(
        self, work: Path, url: str | None, server: dovecot.PrivateDovecot, user: str, key: bytes
    ) -> None:
        work.mkdir()
        extra = (
            f"[imap]\nenabled = yes\nhost = {dovecot.HOST}\nport = {server.port}\n"
            f"security = none\nusername = {user}\npassword_file = imap-password\n"
        )
        path = write_config(work, url or f"sqlite:///{work / 'gateway.db'}", extra=extra)
        (work / "imap-password").write_text(server.users[user] + "\n")
        (work / "secret").write_bytes(key)  # one secret: --url may be one shared database
        settings = config.load(path)
        self.database, _ = prepare(settings)
        self.stored = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.watcher = ImapWatcher(
            lambda: settings, self.database, lambda: datetime.now(UTC), self.stored.set
        )

    def ingest(self, expected: int) -> float:
        """Seconds from start() to the end of the pass that took in the backlog."""
        passes = PassDone(expected)
        logger = logs.get("imap")
        logger.setLevel(logging.INFO)
        logger.addHandler(passes)
        started = time.perf_counter()
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.watcher.start(), self.loop).result(30)
        if not passes.done.wait(600):
            raise SystemExit("the backlog was not taken in within one pass")
        seconds = time.perf_counter() - started
        logger.removeHandler(passes)
        print(f"# watcher took in {expected}: {seconds:.2f} s")
        return seconds

    def latency(self, server: dovecot.PrivateDovecot, user: str, samples: int) -> list[float]:
        found = []
        for n in range(samples):
            time.sleep(0.2)  # back in IDLE after the previous message's move
            self.stored.clear()
            began = time.perf_counter()
            server.append(user, message(n, "latency"))
            if not self.stored.wait(15):
                raise SystemExit("a message was not stored within 15 s")
            found.append(time.perf_counter() - began)
        return found

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.watcher.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.database.dispose()


def backlog(server: dovecot.PrivateDovecot, count: int, tag: str) -> str:
    user = server.add_user()
    with server.client(user) as client:
        for n in range(count):
            client.append("INBOX", message(n, tag))
    return user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages, 10 samples")
    parser.add_argument("--messages", type=int, help="backlog size (default 1,000)")
    parser.add_argument("--url", help="a database URL to use instead of scratch SQLite")
    args = parser.parse_args()
    count = args.messages or (200 if args.quick else 1000)
    samples = 10 if args.quick else 50
    why = dovecot.available()
    if why is not None:
        raise SystemExit(f"Dovecot is not available: {why}")
    c.header("IMAP watcher: backlog ingest against a bare imapclient fetch; APPEND latency")
    print(f"# storage: {(args.url or 'sqlite').split(':')[0]}; {count} messages per backlog")
    with dovecot.private_dovecot() as server, c.workdir("imap") as work:
        first, second = backlog(server, count, "one"), backlog(server, count, "two")
        server.append(first, message(0, "other"), folder="Other")
        bare = [bare_fetch(server, first, "INBOX", BATCH_MESSAGES)]
        single = bare_fetch(server, first, "INBOX", 1)
        key = os.urandom(32)
        watching = Watching(work / "one", args.url, server, first, key)
        taken = [watching.ingest(count)]
        watching.stop()
        watching = Watching(work / "two", args.url, server, second, key)
        taken.append(watching.ingest(count))
        bare.append(bare_fetch(server, first, "Processed", BATCH_MESSAGES))
        latencies = watching.latency(server, second, samples)
        watching.stop()
        floor = bare_idle_latency(server, first, samples)
    rate = 2 * count / sum(taken)
    bare_rate = 2 * count / sum(bare)
    print()
    print(f"| backlog of 2 x {count} | messages/s | watcher / this |")
    print("| --- | ---: | ---: |")
    print(f"| watcher: fetch, commit, record, MOVE | {rate:,.0f} | |")
    print(f"| bare fetch, {BATCH_MESSAGES} per FETCH | {bare_rate:,.0f} | {rate / bare_rate:.2f} |")
    print(f"| bare fetch, 1 per FETCH | {count / single:,.0f} | {rate * single / count:.2f} |")
    print()
    print(f"| APPEND to ..., {samples} messages | p50 ms | p99 ms |")
    print("| --- | ---: | ---: |")
    for name, values in (
        ("inbox commit by the idling watcher", latencies),
        ("EXISTS seen by a bare IDLE client", floor),
    ):
        print(
            f"| {name} | {statistics.median(values) * 1000:.0f} "
            f"| {c.percentile(values, 99) * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
