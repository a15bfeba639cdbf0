"""From 250 to the staff notification in the outbox (issue 4), at 10 reports a second.

    .venv/bin/python bench/report_latency.py [--quick]

A real `conduct-gateway serve` (SQLite, WAL, synchronous=FULL) with its smarthost pointed
at a bare aiosmtpd sink in its own process (so the sender really delivers the
acknowledgement and the two staff copies of each report). An open-loop client sends one
4 KB report every 0.1 s for 60 s (10 s with --quick), each from a new reporter over its
own connection (aiosmtplib.send), and notes the wall-clock time it read the 250 and the
inbox id in it. A thread polls the database every 20 ms (a read-only SQLite connection)
for outbox rows of kind `copy` (the staff notifications) and notes when each report's
first became visible, that is committed. Reported: that time minus the 250 (the
outbox is polled, so add up to 20 ms of resolution), and outbox.created_at minus the 250
(created_at is the pipeline's clock when it started the transaction, before the work
and the commit, so it reads lower). Clocks are the same machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

RATE = 10.0
POLL = 0.02


class OutboxWatcher(threading.Thread):
    """Notes when the first staff copy of each inbox message becomes visible."""

    def __init__(self, database: Path) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.seen: dict[int, tuple[float, float]] = {}  # inbox id -> (seen at, created_at)
        self.stop = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        last = 0
        while not self.stop.is_set():
            rows = db.execute(
                "SELECT o.id, o.created_at, m.inbox_id FROM outbox o "
                "JOIN messages m ON m.case_number = o.case_number AND m.inbox_id IS NOT NULL "
                "WHERE o.kind = 'copy' AND o.id > ? ORDER BY o.id",
                (last,),
            ).fetchall()
            now = time.time()
            for outbox_id, created_at, inbox_id in rows:
                last = max(last, outbox_id)
                if inbox_id not in self.seen:
                    created = datetime.fromisoformat(created_at).replace(tzinfo=UTC)
                    self.seen[inbox_id] = (now, created.timestamp())
            time.sleep(POLL)
        db.close()


async def send_reports(port: int, seconds: float) -> tuple[dict[int, float], list[float], int]:
    import aiosmtplib

    answered: dict[int, float] = {}
    transaction_ms: list[float] = []
    errors = 0

    async def one(number: int) -> None:
        nonlocal errors
        sender = f"reporter{number}.{time.monotonic_ns()}@example.net"
        data = c.message(sender, c.CONDUCT_ADDRESS, number, tag="lat")
        began = time.perf_counter()
        try:
            _refused, reply = await aiosmtplib.send(
                data,
                sender=sender,
                recipients=[c.CONDUCT_ADDRESS],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
                timeout=60,
            )
        except aiosmtplib.SMTPException:
            errors += 1
            return
        at = time.time()
        transaction_ms.append((time.perf_counter() - began) * 1000)
        answered[int(reply.rpartition(" ")[2])] = at

    count = int(seconds * RATE)
    started = time.perf_counter()
    tasks = []
    for number in range(count):
        await asyncio.sleep(max(0.0, started + number / RATE - time.perf_counter()))
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    return answered, transaction_ms, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else 60.0
    c.header(f"report to staff notification in the outbox: {RATE:.0f} reports/s for {seconds:.0f}s")
    with c.workdir("latency") as work:
        sink_port, gateway_port = c.free_port(), c.free_port()
        config = c.gateway_config(
            work, smtp_port=gateway_port, upstream_port=sink_port, smarthost_port=sink_port
        )
        database = work / "gateway.db"
        c.prepare_database(config)
        sink = c.start_server("sink", sink_port, work)
        serve = c.start_serve(config)
        watcher = OutboxWatcher(database)
        watcher.start()
        try:
            cpu = serve.cpu()
            answered, transaction_ms, errors = asyncio.run(send_reports(gateway_port, seconds))
            cpu = serve.cpu() - cpu
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not set(answered) <= set(watcher.seen):
                time.sleep(0.1)
        finally:
            watcher.stop.set()
            watcher.join()
            serve.stop()
            sink.stop()
        if "Traceback" in serve.log.read_text():
            print("# WARNING: serve logged a traceback", file=sys.stderr)
    visible = [(watcher.seen[i][0] - t) * 1000 for i, t in answered.items() if i in watcher.seen]
    created = [(watcher.seen[i][1] - t) * 1000 for i, t in answered.items() if i in watcher.seen]
    missing = len(answered) - len(visible)
    print(
        f"# {len(answered)} reports answered 250, {errors} errors, {missing} without a staff "
        f"copy in the outbox; serve used {100 * cpu / seconds:.0f}% of a core while sending"
    )
    print()
    print("| measure | reports | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in (
        ("SMTP transaction (connect to 250)", transaction_ms),
        ("250 -> staff copy committed in the outbox (polled)", visible),
        ("250 -> outbox.created_at of the staff copy", created),
    ):
        print(
            f"| {name} | {len(values)} | {c.percentile(values, 50):.1f} "
            f"| {c.percentile(values, 99):.1f} | {max(values):.1f} |"
        )


if __name__ == "__main__":
    main()
