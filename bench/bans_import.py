"""`conduct-gateway bans import` of a 100,000-line file (issue 9): seconds and peak memory.

    .venv/bin/python bench/bans_import.py [--quick]

Generates a file of the formats large communities bring (plain addresses, `*@domain`,
Sympa `*` wildcards, Mailman `^regex` lines, comments), imports it into a fresh SQLite
database by a real `conduct-gateway bans import FILE -c CONFIG` process, then imports it
again (every line already present). Peak RSS comes from the child's rusage; seconds are
wall time of the whole command, start-up included. Beside it, the same for a file a tenth
the size, to show that memory does not grow with the file.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """[gateway]
conduct_address = conduct@example.org
staff = alice@example.org
executive_director = ed@example.org
secret_file = {base}/secret
[storage]
url = sqlite:///{base}/gateway.db
[relay]
lists = dev@lists.example.org
[outbound]
smarthost = maildir:{base}/out
"""


def lines(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = ["# generated ban list", ""]
    for n in range(count):
        kind = rng.random()
        if kind < 0.90:
            out.append(f"member{n}@spam{n % 997}.example")
        elif kind < 0.97:
            out.append(f"*@bad{n}.example")
        elif kind < 0.99:
            out.append(f"*spam{n}*@*.example.net")
        else:
            out.append(f"^bot{n}[0-9]+@")
    return out


def run(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS of this child in MB (its own rusage), and its output."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], stdout=out, stderr=err, cwd=ROOT
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{args} failed: {err.read().decode()}")
        return seconds, usage.ru_maxrss // 1024, out.read().decode().strip()


def measure(count: int) -> list[tuple[str, float, int, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config = base / "gateway.ini"
        config.write_text(CONFIG.format(base=base))
        (base / "secret").write_bytes(os.urandom(32))
        bans = base / "bans.txt"
        bans.write_text("\n".join(lines(count)) + "\n")
        run(["db", "upgrade", "-c", str(config)])
        rows = []
        for label in ("first import", "again (all present)"):
            seconds, peak, output = run(["bans", "import", str(bans), "-c", str(config)])
            rows.append((label, seconds, peak, output))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    big = 10_000 if options.quick else 100_000
    print(f"# command: .venv/bin/python bench/bans_import.py{' --quick' if options.quick else ''}")
    print(f"# date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, load average {os.getloadavg()[0]:.2f}")
    print("| lines | run | seconds | lines/s | peak RSS MB | output |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for count in (big // 10, big):
        for label, seconds, peak, output in measure(count):
            print(
                f"| {count:,} | {label} | {seconds:.1f} | {count / seconds:,.0f} | {peak} | "
                f"{output} |"
            )


if __name__ == "__main__":
    main()
