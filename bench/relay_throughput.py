"""List relay throughput (issue 3): the gateway with 101,200 bans vs a bare aiosmtpd relay hop.

    .venv/bin/python bench/relay_throughput.py [--quick]

Both relays forward 4 KB posts to the same bare aiosmtpd sink, each in its own process:
(a) a real `conduct-gateway serve` (SQLite) with 100,000 exact, 1,000 domain (500 `*@d`,
500 `*@*.d`) and 200 regex bans loaded, every post checked at RCPT and DATA and relayed
before-queue; (b) an aiosmtpd server whose handle_DATA relays to the sink with aiosmtplib,
no checks. Clients are asyncio tasks with aiosmtplib, one persistent connection each,
sending one message after another (closed loop). Each load level is measured in
baseline, gateway, gateway, baseline order (ABBA) to cancel drift, and the ratio is of
the summed throughputs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

EXACT, DOMAINS, REGEXES = 100_000, 1_000, 200


def load_bans(config: Path) -> float:
    from rules.bans import parse_pattern
    from storage import bans

    database = c.prepare_database(config)
    started = time.perf_counter()
    patterns = [parse_pattern(t) for t in c.ban_texts(EXACT, DOMAINS, REGEXES)]
    with database.transaction() as session:
        added, _present = bans.add_many(
            session,
            patterns=patterns,
            list_address=None,
            reason="benchmark",
            created_by="bench",
            now=datetime.now(UTC),
        )
    database.dispose()
    assert added == EXACT + DOMAINS + REGEXES, added
    return time.perf_counter() - started


def messages() -> Callable[[], tuple[str, str, bytes]]:
    rng = random.Random(3)
    numbers = itertools.count()

    def next_message() -> tuple[str, str, bytes]:
        sender = c.member_address(rng)
        return sender, c.LIST_ADDRESS, c.message(sender, c.LIST_ADDRESS, next(numbers))

    return next_message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, for a smoke test")
    args = parser.parse_args()
    window = 1.5 if args.quick else 8.0
    levels = (1, 10, 50)
    c.header("list relay throughput: gateway (101,200 bans) vs bare aiosmtpd relay hop")
    with c.workdir("relay") as work:
        sink_port, relay_port, gateway_port = c.free_port(), c.free_port(), c.free_port()
        config = c.gateway_config(
            work, smtp_port=gateway_port, upstream_port=sink_port, smarthost_port=sink_port
        )
        seconds = load_bans(config)
        print(
            f"# loaded {EXACT + DOMAINS + REGEXES} bans "
            f"with storage.bans.add_many in {seconds:.1f}s"
        )
        sink = c.start_server("sink", sink_port, work)
        relay = c.start_server("relay", relay_port, work, "--upstream", f"127.0.0.1:{sink_port}")
        started = time.perf_counter()
        serve = c.start_serve(config)
        print(
            f"# serve ready in {time.perf_counter() - started:.1f}s (index of 101,200 bans built)"
        )
        rows = []
        try:
            for clients in levels:
                runs: dict[str, list[c.LoadResult]] = {"baseline": [], "gateway": []}
                for name in ("baseline", "gateway", "gateway", "baseline"):
                    port = relay_port if name == "baseline" else gateway_port
                    servers = {"sink": sink, name: relay if name == "baseline" else serve}
                    result = asyncio.run(
                        c.closed_loop(port, clients, window, 1.0, messages(), servers)
                    )
                    runs[name].append(result)
                    print(c.line(clients, name, result), flush=True)
                rows.append((clients, runs))
        finally:
            serve.stop()
            relay.stop()
            sink.stop()
        if "Traceback" in serve.log.read_text():
            print("# WARNING: serve logged a traceback", file=sys.stderr)
    print()
    c.ratio_table(rows, "bare relay", "gateway")


if __name__ == "__main__":
    main()
