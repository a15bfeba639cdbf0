"""`conduct-gateway import` of a generated mbox (issue 4): messages/s and peak memory.

    .venv/bin/python bench/import_rate.py [--quick]

Generates mboxes of 2,500 and 10,000 messages (250 and 1,000 with --quick) of past
conduct correspondence, about 4 KB each: 40% new reports from new reporters, 50% replies
from a reporter to their own thread (In-Reply-To and References to the thread's last
message, Subject `Re:`), 10% replies from a staff member to a thread (internal notes).
Each is imported into a fresh SQLite database (WAL, synchronous=FULL) by a real
`conduct-gateway import MBOX -c CONFIG` process under `/usr/bin/time -v` (peak RSS);
while it runs, its resident memory (VmRSS) is sampled twice a second together with the
number of inbox rows stored so far, to show whether memory grows with the mailbox.
Seconds and messages/s are wall time of the whole command, start-up included.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TIME = Path("/usr/bin/time")
_PARAGRAPH = (
    "At the meetup last week a participant kept interrupting the speakers and made remarks "
    "about people's accents that several of us found unwelcoming. I would like the team to "
    "look into it and tell me what the next steps are.\n"
)


def write_mbox(path: Path, count: int, seed: int = 4) -> dict[str, int]:
    rng = random.Random(seed)
    threads: list[tuple[str, str, str]] = []  # (reporter, subject, last message id)
    kinds = {"report": 0, "reply": 0, "staff": 0}
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="ascii", newline="\n") as out:
        for number in range(count):
            when = start + timedelta(minutes=7 * number)
            mid = f"<imp{number}.{seed}@mail.example.net>"
            roll = rng.random()
            if not threads or roll < 0.4:
                sender = f"reporter{number}@example.net"
                subject = f"Report about the meetup, number {number}"
                headers = [f"From: Reporter {number} <{sender}>", f"Subject: {subject}"]
                threads.append((sender, subject, mid))
                kinds["report"] += 1
            else:
                index = rng.randrange(len(threads))
                reporter, subject, last = threads[index]
                sender = reporter if roll < 0.9 else "alice@example.org"
                headers = [
                    f"From: <{sender}>",
                    f"Subject: Re: {subject}",
                    f"In-Reply-To: {last}",
                    f"References: {last}",
                ]
                threads[index] = (reporter, subject, mid)
                kinds["reply" if roll < 0.9 else "staff"] += 1
            headers += [
                f"To: {c.CONDUCT_ADDRESS}",
                f"Message-ID: {mid}",
                f"Date: {format_datetime(when)}",
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=us-ascii",
            ]
            body = _PARAGRAPH * 17 + f"(message {number})\n"
            stamp = when.strftime("%a %b %d %H:%M:%S %Y")
            out.write(f"From {sender} {stamp}\n" + "\n".join(headers) + "\n\n" + body + "\n")
    return kinds


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def stored(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0


@dataclass
class ImportRun:
    count: int
    kinds: dict[str, int]
    seconds: float
    peak_kb: int
    samples: list[tuple[float, int, int]]  # (seconds, messages stored, RSS KB)
    summary: str
    mbox_mb: float


def run_import(work: Path, count: int) -> ImportRun:
    directory = work / f"import-{count}"
    directory.mkdir()
    mbox = directory / "past.mbox"
    kinds = write_mbox(mbox, count)
    config = c.gateway_config(directory, smtp_port=2525, upstream_port=1, smarthost_port=1)
    c.prepare_database(config)  # the schema, so that progress can be read while it runs
    database = directory / "gateway.db"
    command = [c.PYTHON, "-m", "gateway", "import", str(mbox), "-c", str(config)]
    timing = directory / "time.txt"
    if TIME.exists():
        command = [str(TIME), "-v", "-o", str(timing), *command]
    samples: list[tuple[float, int, int]] = []
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=c.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while process.poll() is None:
        time.sleep(0.5)
        pids = children(process.pid) if TIME.exists() else [process.pid]
        rss = rss_kb(pids[0]) if pids else None
        if rss is not None:
            samples.append((time.perf_counter() - started, stored(database), rss))
    out, err = process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"import failed ({process.returncode}):\n{out}\n{err[-3000:]}")
    if TIME.exists():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read_text())
        assert found is not None
        peak = int(found.group(1))
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = out.strip().splitlines()[-1]
    return ImportRun(count, kinds, elapsed, peak, samples, summary, mbox.stat().st_size / 2**20)


def late_rate(run: ImportRun) -> str:
    """Messages/s over the last quarter of the mailbox (does the rate fall as it grows?)."""
    for seconds, done, _rss in run.samples:
        if done >= run.count * 3 // 4:
            return f"{(run.count - done) / (run.seconds - seconds):.0f}"
    return "-"


def rss_at(samples: list[tuple[float, int, int]], messages: int) -> str:
    for _seconds, done, rss in samples:
        if done >= messages:
            return f"{rss / 1024:.0f}"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="250 and 1,000 messages")
    args = parser.parse_args()
    sizes = (250, 1000) if args.quick else (2500, 10000)
    c.header("conduct-gateway import of a generated mbox: rate and peak memory")
    print(f"# peak RSS from {'/usr/bin/time -v' if TIME.exists() else 'getrusage'}")
    results = []
    with c.workdir("import") as work:
        for count in sizes:
            result = run_import(work, count)
            results.append(result)
            print(f"# {count}: {result.summary} ({result.kinds})", flush=True)
    print()
    print(
        "| messages | mbox MB | seconds | messages/s | last quarter msg/s | peak RSS MB "
        "| RSS MB after 25% | after 50% | after 75% |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        quarters = [rss_at(r.samples, r.count * q // 4) for q in (1, 2, 3)]
        print(
            f"| {r.count:,} | {r.mbox_mb:.1f} | {r.seconds:.1f} | {r.count / r.seconds:.0f} "
            f"| {late_rate(r)} | {r.peak_kb / 1024:.0f} | {' | '.join(quarters)} |"
        )


if __name__ == "__main__":
    main()
