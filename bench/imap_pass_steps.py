"""Where an IMAP watcher's backlog pass spends its time, step by step (issue 6).

    .venv/bin/python bench/imap_pass_steps.py [--passes N] [--messages N] [--postgresql]

Each pass gives a fresh user N waiting messages (1,000 by default) and runs the real
`ImapWatcher` over them as bench/imap_backlog.py does, with the IMAP wrapper's and the
ingest's steps timed (by wrapping them: the measurement adds a few microseconds a call).
Prints the timeline of the last pass (thread, step, start and end in ms from
`start()`) and each step's mean time per pass, summed over threads: steps that overlap
on the mover's thread add up to more than the pass.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import imap_backlog

from gateway import imap_client, imap_ingest, imap_mover, imap_watcher
from storage import imap_state
from tests import dovecot

STEPS: list[tuple[Any, str]] = [
    (imap_client.ImapConnection, name)
    for name in ("ensure_folder", "select", "listing", "fetch", "move", "close")
] + [
    (imap_watcher, "connect"),  # as the watcher imported it
    (imap_ingest._Target, "commit"),
    (imap_ingest._Target, "mark_moved"),
    (imap_state, "states"),
    (imap_mover.Mover, "finish"),
]


class Steps:
    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.timeline: list[tuple[str, str, float, float]] = []

    def wrap(self, owner: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                thread = threading.current_thread().name
                self.timeline.append((thread, name, began - self.origin, ended - self.origin))

        setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    why = dovecot.available()
    if why is not None:
        raise SystemExit(f"Dovecot is not available: {why}")
    steps = Steps()
    for owner, name in STEPS:
        steps.wrap(owner, name)
    c.header("IMAP watcher: one backlog pass, step by step")
    totals: dict[str, float] = defaultdict(float)
    passes: list[float] = []
    databases = imap_backlog.Databases(args.postgresql)
    try:
        with dovecot.private_dovecot() as server, c.workdir("imap-steps") as work:
            for number in range(args.passes):
                user = imap_backlog.backlog(server, args.messages, f"s{number}")
                with imap_backlog.watching(work / user, databases, server, user, False) as w:
                    steps.origin, steps.timeline = time.perf_counter(), []
                    passes.append(w.ingest(args.messages))
                for _, name, began, ended in steps.timeline:
                    totals[name] += ended - began
    finally:
        databases.drop_all()
    print("\n| thread | step | from ms | to ms |\n| --- | --- | ---: | ---: |")
    for thread, name, began, ended in steps.timeline:
        print(f"| {thread} | {name} | {began * 1000:.1f} | {ended * 1000:.1f} |")
    print("\n| step | ms per pass (mean) |\n| --- | ---: |")
    for name, spent in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {name} | {spent / args.passes * 1000:.1f} |")
    print(f"| the pass, from start() | {sum(passes) / len(passes) * 1000:.1f} |")


if __name__ == "__main__":
    main()
