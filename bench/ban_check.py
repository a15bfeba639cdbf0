"""One ban check (issue 3): BanIndex.match with 101,200 bans vs 10 bans vs Mailman 3's loop.

    .venv/bin/python bench/ban_check.py [--quick]

The big set: 100,000 exact, 1,000 domain (500 `*@d`, 500 `*@*.d`) and 200 regex bans, all
lists; the small set: 10 of them (6 exact, 2 domain, 2 regex). The same stream of
addresses goes to both: half permitted senders (some with `+tag`), half caught by a ban
(exact ones also in upper case, with `+tag` and with BATV `prvs=` prefixes; domain,
subdomain and regex hits). Each call is timed alone with perf_counter_ns, garbage
collector on, as in serve; the big and small sets are measured in alternating rounds.

Mailman 3 (`mailman.model.bans.BanManager.is_banned`) looks the exact address up in the
database, then loads every ban of the list and of the site and, for each one whose text
starts with `^`, calls `re.match(pattern, email, re.IGNORECASE)`. Here it runs with the
same bans written as Mailman patterns (domain `^.*@d$`, subdomains `^.*@.*\\.d$`, regex
`^(?:r)$`) in memory, without the database (so it is flattered): the exact lookup is a set
lookup and the loop is over a Python list of the 101,200 pattern strings. `re.match` with
a pattern string goes through the `re` module's cache, which holds 512 patterns: with
1,200 patterns in turn every call compiles again, as in Mailman. A second variant
precompiles the patterns (what Mailman could do at best while still looping).
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

EXACT, DOMAINS, REGEXES = 100_000, 1_000, 200
LIST = c.LIST_ADDRESS


def index_of(texts: list[str]) -> object:
    from rules.bans import Ban, BanIndex, parse_pattern

    now = datetime.now(UTC)
    return BanIndex(
        Ban(
            id=number,
            pattern=parse_pattern(text),
            list=None,
            reason=None,
            created_by="bench",
            created_at=now,
        )
        for number, text in enumerate(texts, 1)
    )


def mailman_patterns(texts: list[str]) -> list[str]:
    """The same bans as Mailman 3 stores them: addresses, or `^` regexes."""
    out = []
    for text in texts:
        if text.startswith("re:"):
            out.append(f"^(?:{text[3:]})$")
        elif text.startswith("*@*."):
            out.append(f"^.*@.*\\.{re.escape(text[4:])}$")
        elif text.startswith("*@"):
            out.append(f"^.*@{re.escape(text[2:])}$")
        else:
            out.append(text)
    return out


def mailman_check(bans: list[str], exact: set[str]) -> Callable[[str], bool]:
    def is_banned(email: str) -> bool:
        if email in exact:  # Mailman: a database query on the address
            return True
        for ban in bans:  # Mailman: every ban row of the list, then of the site
            if ban.startswith("^") and re.match(ban, email, re.IGNORECASE) is not None:
                return True
        return False

    return is_banned


def mailman_precompiled(bans: list[str], exact: set[str]) -> Callable[[str], bool]:
    compiled = [re.compile(b, re.IGNORECASE) if b.startswith("^") else None for b in bans]

    def is_banned(email: str) -> bool:
        if email in exact:
            return True
        for ban in compiled:  # noqa: SIM110 (the loop as Mailman writes it)
            if ban is not None and ban.match(email) is not None:
                return True
        return False

    return is_banned


def addresses(count: int) -> list[str]:
    rng = random.Random(6)
    return [
        c.banned_address(rng, EXACT, DOMAINS, REGEXES)
        if rng.random() < 0.5
        else c.member_address(rng)
        for _ in range(count)
    ]


def timed(check: Callable[[str], object], stream: list[str], out: list[float]) -> int:
    hits = 0
    clock = time.perf_counter_ns
    for address in stream:
        began = clock()
        found = check(address)
        out.append((clock() - began) / 1000)
        hits += found is not None and found is not False
    return hits


def summary(name: str, bans: int, times: list[float], hits: int) -> str:
    return (
        f"| {name} | {bans:,} | {len(times):,} | {c.percentile(times, 50):.1f} "
        f"| {c.percentile(times, 99):.1f} | {max(times):.0f} | {hits / len(times):.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer checks, for a smoke test")
    args = parser.parse_args()
    checks = 10_000 if args.quick else 100_000
    naive_checks = 20 if args.quick else 150
    c.header("one ban check: BanIndex.match, 101,200 bans vs 10 bans vs Mailman 3's loop")
    big_texts = c.ban_texts(EXACT, DOMAINS, REGEXES)
    small_texts = c.small_ban_texts()
    started = time.perf_counter()
    big = index_of(big_texts)
    print(f"# BanIndex of {len(big_texts):,} bans built in {time.perf_counter() - started:.1f}s")
    small = index_of(small_texts)
    now = datetime.now(UTC)
    stream = addresses(checks)

    def check_with(index: object) -> Callable[[str], object]:
        match = index.match  # type: ignore[attr-defined]
        return lambda address: match(address, LIST, now)

    results: dict[str, tuple[list[float], int]] = {"big": ([], 0), "small": ([], 0)}
    rounds = 10
    size = len(stream) // rounds
    for number in range(rounds):
        part = stream[number * size : (number + 1) * size]
        for name, index in (("big", big), ("small", small))[:: 1 if number % 2 else -1]:
            times, hits = results[name]
            results[name] = (times, hits + timed(check_with(index), part, times))

    mm_big = mailman_patterns(big_texts)
    mm_small = mailman_patterns(small_texts)
    exact_big = {t for t in mm_big if not t.startswith("^")}
    exact_small = {t for t in mm_small if not t.startswith("^")}
    naive_stream = stream[:naive_checks]
    naive: dict[str, tuple[list[float], int]] = {}
    for name, check, sample in (
        ("Mailman 3 loop, 101,200 bans", mailman_check(mm_big, exact_big), naive_stream),
        ("same, regexes precompiled", mailman_precompiled(mm_big, exact_big), naive_stream),
        ("Mailman 3 loop, 10 bans", mailman_check(mm_small, exact_small), stream),
    ):
        times: list[float] = []
        hits = timed(check, sample, times)
        naive[name] = (times, hits)
    gc.collect()

    print()
    print("| check | bans | checks | p50 µs | p99 µs | max µs | caught |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(summary("BanIndex.match", len(big_texts), *results["big"]))
    print(summary("BanIndex.match", len(small_texts), *results["small"]))
    for name, (times, hits) in naive.items():
        bans = len(small_texts) if "10 bans" in name else len(big_texts)
        print(summary(name, bans, times, hits))
    big_p99 = c.percentile(results["big"][0], 99)
    small_p99 = c.percentile(results["small"][0], 99)
    print()
    print(
        f"p99 big / p99 small = {big_p99 / small_p99:.2f} (goal <= 2); "
        f"p99 big = {big_p99:.1f} µs (goal < 50)"
    )


if __name__ == "__main__":
    main()
