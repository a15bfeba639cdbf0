"""Conduct-address intake throughput (issue 3): committed before 250 vs a bare fsyncing sink.

    .venv/bin/python bench/intake_throughput.py [--quick]

(a) a real `conduct-gateway serve` (SQLite, WAL, synchronous=FULL): each 4 KB report to
conduct@example.org is committed to the inbox before the 250. Its pipeline then opens a
case per report (every report comes from a new reporter) and queues an acknowledgement
and two staff copies, which its sender delivers to a bare aiosmtpd sink (the smarthost,
in its own process); that background work shares serve's process and CPU with intake.
(b) a bare aiosmtpd server that writes each message to its own file and fsyncs it (in a
thread) before answering 250. Same disk. Clients as in relay_throughput.py: aiosmtplib,
one persistent connection each, closed loop; ABBA order per load level. Each level
starts serve on a fresh database before its first gateway window and stops it after
the second (with whatever backlog its pipeline has left), so serve's background work
never runs during a baseline window; the second gateway window of a level runs while
the pipeline works on the first one's backlog.

    .venv/bin/python bench/intake_throughput.py --without-pipeline

is a diagnostic: serve without its pipeline, sender and scheduler, so that intake has
the process and the database to itself (nothing processes the reports then).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c


def reports() -> Callable[[], tuple[str, str, bytes]]:
    numbers = itertools.count()

    def next_message() -> tuple[str, str, bytes]:
        n = next(numbers)
        sender = f"reporter{n}.{time.monotonic_ns()}@example.net"
        return sender, c.CONDUCT_ADDRESS, c.message(sender, c.CONDUCT_ADDRESS, n, tag="r")

    return next_message


def progress(database: Path) -> tuple[int, int, int]:
    """(inbox rows, of which processed, outbox rows sent)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        rows, done = db.execute(
            "SELECT count(*), coalesce(sum(state = 'done'), 0) FROM inbox"
        ).fetchone()
        sent = db.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()[0]
    return int(rows), int(done), int(sent)


def level(
    work: Path,
    clients: int,
    window: float,
    sink: c.Process,
    bare: c.Process,
    without: tuple[str, ...],
) -> dict[str, list[c.LoadResult]]:
    """Baseline, gateway, gateway, baseline; serve (a fresh database) runs only from the
    first gateway window to the end of the second, so its backlog never overlaps a
    baseline window."""
    directory = work / f"serve-{clients}"
    directory.mkdir()
    port = c.free_port()
    config = c.gateway_config(
        directory, smtp_port=port, upstream_port=sink.port, smarthost_port=sink.port
    )
    c.prepare_database(config)
    database = directory / "gateway.db"
    runs: dict[str, list[c.LoadResult]] = {"baseline": [], "gateway": []}
    serve: c.Process | None = None
    started = 0.0
    for name in ("baseline", "gateway", "gateway", "baseline"):
        if name == "gateway" and serve is None:
            serve = c.start_serve(config, without)
            started = time.monotonic()
        if name == "baseline" and serve is not None:
            stored, processed, sent = progress(database)
            seconds = time.monotonic() - started
            serve.stop()
            if "Traceback" in serve.log.read_text():
                print("# WARNING: serve logged a traceback", file=sys.stderr)
            serve = None
            print(
                f"  {clients:>2} clients: serve stopped; in {seconds:.1f}s it stored {stored}, "
                f"processed {processed} ({processed / seconds:.1f}/s) and sent {sent} mails",
                flush=True,
            )
        target = bare if name == "baseline" else serve
        assert target is not None
        result = asyncio.run(
            c.closed_loop(
                target.port, clients, window, 1.0, reports(), {"sink": sink, name: target}
            )
        )
        runs[name].append(result)
        print(c.line(clients, name, result), flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, for a smoke test")
    parser.add_argument(
        "--without-pipeline",
        action="store_true",
        help="diagnostic: serve without its pipeline, sender and scheduler "
        "(bench/_serve_partial.py), "
        "so intake has the process and the database to itself",
    )
    args = parser.parse_args()
    without = ("pipeline", "sender", "scheduler") if args.without_pipeline else ()
    window = 1.5 if args.quick else 5.0
    levels = (1, 10, 50)
    c.header("conduct intake: gateway (commit before 250) vs bare aiosmtpd + fsync per message")
    with c.workdir("intake") as work:
        sink_port, fsync_port = c.free_port(), c.free_port()
        sink = c.start_server("sink", sink_port, work)
        bare = c.start_server("fsync", fsync_port, work, "--dir", str(work / "fsync-spool"))
        rows = []
        try:
            for clients in levels:
                rows.append((clients, level(work, clients, window, sink, bare, without)))
        finally:
            bare.stop()
            sink.stop()
    print()
    c.ratio_table(rows, "fsync sink", "gateway, no pipeline" if without else "gateway")


if __name__ == "__main__":
    main()
