"""What `bans …` and `held …` do (SPEC section 9); cli.py holds their options and help.

Each function takes the settings and an open Database, prints its result, and raises
Refused for input it will not act on (exit 1) or click.UsageError/BadParameter (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress

from gateway import cli_render
from gateway.config import Settings
from gateway.snapshot_builder import policy_from
from rules.addresses import AddressError, normalise, normalise_domain, normalise_list
from rules.bans import (
    BadPattern,
    BanIndex,
    BanPattern,
    PatternKind,
    parse_pattern,
    protected_hits,
)
from rules.bans import translate_import_line as translate
from rules.durations import BadValue, parse_date, parse_duration
from rules.errors import GatewayError
from storage import bans, held, retention_dates
from storage.db import Database
from storage.models import Case

ACTOR = "cli"
# From this many lines on, `bans import` shows its progress on stderr.
LARGE_IMPORT = 10_000


class Refused(GatewayError):
    """Input a command will not act on: it names what was wrong (exit 1)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def served_list(settings: Settings, text: str) -> str:
    """The list address, normalised as routing has it, when the gateway serves it; else Refused."""
    try:
        address = normalise_list(text)
    except AddressError:
        address = text.strip().lower()
    domain = address.rpartition("@")[2]
    if address in settings.relay.lists or domain in settings.relay.list_domains:
        return address
    raise Refused(
        f"{text} is not a served list (expected an address in [relay] lists, "
        "or at a domain in [relay] list_domains)"
    )


def protected_addresses(settings: Settings) -> list[str]:
    gateway = settings.gateway
    return [
        *(person.address for person in gateway.staff),
        gateway.executive_director.address,
        gateway.conduct_address,
    ]


class Protection:
    """`protected_hits` for many patterns: a cheap pre-check spares the full one for most.

    An exact, domain or subdomains pattern can only catch a protected address or a local
    domain if its value is one of them, one of their domains or a parent domain; only
    those patterns, and every regex, go through `protected_hits` (the one decision).
    """

    def __init__(self, settings: Settings) -> None:
        self.addresses = protected_addresses(settings)
        self.local_domains = settings.gateway.local_domains
        names: set[str] = set()
        for address in self.addresses:
            normalised = normalise(address)
            names.add(normalised)
            names.add(normalised.rpartition("@")[2])
        names.update(normalise_domain(domain) for domain in self.local_domains)
        self._values = {
            ".".join(labels[i:])
            for name in names
            for labels in [name.split(".")]
            for i in range(len(labels))
        }

    def hits(self, pattern: BanPattern) -> list[str]:
        if pattern.kind is not PatternKind.REGEX and pattern.value not in self._values:
            return []
        return protected_hits(pattern, self.addresses, self.local_domains)


def _pattern(text: str) -> BanPattern:
    try:
        return parse_pattern(text)
    except BadPattern as error:
        raise Refused(str(error)) from None


def _expiry(
    settings: Settings, duration: str | None, until: str | None, now: datetime
) -> datetime | None:
    if duration is not None and until is not None:
        raise click.UsageError("--for and --until exclude each other")
    if duration is not None:
        try:
            expires = now + parse_duration(duration)
        except BadValue as error:
            raise click.BadParameter(str(error), param_hint="--for") from None
        if expires <= now:
            raise Refused(f"--for {duration}: a ban must last longer than that")
        return expires
    if until is not None:
        try:
            expires = parse_date(until, settings.reminders.timezone)
        except BadValue as error:
            raise click.BadParameter(str(error), param_hint="--until") from None
        if expires <= now:
            raise Refused(f"--until {until} is in the past")
        return expires
    return None


def list_bans(settings: Settings, database: Database, *, show_all: bool, as_json: bool) -> None:
    now = _now()
    with database.transaction() as session:
        records = bans.list_bans(session, now, include_inactive=show_all)
    if as_json:
        _print_json([cli_render.ban_json(record, now) for record in records])
    elif records:
        click.echo(cli_render.bans_table(records, now, settings.reminders.timezone))
    else:
        click.echo("no bans" if show_all else "no active bans")


def add_ban(
    settings: Settings,
    database: Database,
    *,
    pattern_text: str,
    list_text: str | None,
    duration: str | None,
    until: str | None,
    reason: str | None,
    case: int | None,
    force: bool,
) -> None:
    now = _now()
    pattern = _pattern(pattern_text)
    list_address = None if list_text is None else served_list(settings, list_text)
    expires_at = _expiry(settings, duration, until, now)
    hits = protected_hits(pattern, protected_addresses(settings), settings.gateway.local_domains)
    if hits and not force:
        raise Refused("; ".join(hits) + " (use --force to add it anyway)")
    with database.transaction() as session:
        existing = bans.find_active(session, pattern, list_address, now)
        if existing is not None:
            # Two bans on one pattern and scope would make `#unban PATTERN` lift only one.
            raise Refused(
                f"{pattern} is already banned on {list_address or 'all lists'} by ban "
                f"{existing.id}; `bans remove {existing.id}` first to change it"
            )
        interim = False
        if case is not None:
            found = session.get(Case, case)
            if found is None:
                raise Refused(f"there is no case {case}")
            # As with #ban: until the accused has been notified, the ban is interim.
            interim = found.accused_notified_at is None
        ban = bans.add(
            session,
            pattern=pattern,
            list_address=list_address,
            reason=reason,
            created_by=ACTOR,
            now=now,
            expires_at=expires_at,
            case=case,
            interim=interim,
        )
        bans.schedule_end_notice(session, ban, now)
    zone = settings.reminders.timezone
    click.echo("added " + cli_render.describe_ban(bans.BanRecord(ban), zone))


def remove_ban(settings: Settings, database: Database, *, ban_id: int) -> None:
    now = _now()
    with database.transaction() as session:
        record = bans.get(session, ban_id)
        if record is None:
            raise Refused(f"there is no ban {ban_id}")
        if record.lifted_at is not None:
            raise Refused(f"ban {ban_id} was already lifted by {record.lifted_by}")
        lifted = bans.lift(session, ban_id, ACTOR, now)
        if lifted is not None and lifted.case is not None:
            retention_dates.settle(session, policy_from(settings).retention, now)
    if lifted is None:  # lifted by someone else in between
        raise Refused(f"ban {ban_id} was already lifted")
    zone = settings.reminders.timezone
    click.echo("lifted " + cli_render.describe_ban(bans.BanRecord(lifted), zone))


def check_address(
    settings: Settings,
    database: Database,
    *,
    address: str,
    list_text: str | None,
    as_json: bool,
) -> None:
    """Without --list, every ban counts, whatever its list: "banned anywhere?"."""
    now = _now()
    try:
        normalise(address)
    except AddressError as error:
        raise Refused(str(error)) from None
    list_address = None if list_text is None else served_list(settings, list_text)
    with database.transaction() as session:
        active = bans.load_active(session, now)
    by_id = {ban.id: ban for ban in active}
    if list_address is None:
        # One index whose bans all cover every list; the hit maps back to the real ban.
        index = BanIndex(dataclasses.replace(ban, list=None) for ban in active)
        hit = index.match(address, "", now)
    else:
        hit = BanIndex(active).match(address, list_address, now)
    found = None if hit is None else bans.BanRecord(by_id[hit.id])
    if as_json:
        _print_json(cli_render.check_json(address.strip(), list_address, found, now))
        return
    if found is None:
        click.echo(f"{address.strip()} may post to {list_address or 'every list'}")
        return
    where = found.ban.list or list_address or "every list"
    describe = cli_render.describe_ban(found, settings.reminders.timezone)
    click.echo(f"{address.strip()} is refused on {where} by {describe}")


@contextmanager
def _progress(large: bool) -> Iterator[Progress]:
    console = Console(stderr=True)
    shown = large and console.is_terminal  # a log file gets no bar, not even a blank line
    with Progress(console=console, transient=True, disable=not shown) as progress:
        yield progress


def _import_lines(path: Path) -> list[str]:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refused(f"{path}: line {number}: not UTF-8; nothing was imported") from None
    return lines


def import_bans(
    settings: Settings,
    database: Database,
    *,
    path: Path,
    list_text: str | None,
    reason: str | None,
) -> None:
    """Every line is checked before anything is written: one bad line refuses the file."""
    list_address = None if list_text is None else served_list(settings, list_text)
    lines = _import_lines(path)
    protection = Protection(settings)
    patterns: list[BanPattern] = []
    with _progress(len(lines) >= LARGE_IMPORT) as progress:
        checking = progress.add_task("checking", total=len(lines))
        for number, line in enumerate(lines, start=1):
            try:
                pattern = translate(line)
            except BadPattern as error:
                raise Refused(f"{path}: line {number}: {error}; nothing was imported") from None
            progress.advance(checking)
            if pattern is None:
                continue
            hits = protection.hits(pattern)
            if hits:
                raise Refused(f"{path}: line {number}: {'; '.join(hits)}; nothing was imported")
            patterns.append(pattern)
        storing = progress.add_task("importing", total=len(patterns))
        with database.transaction() as session:
            added, already = bans.add_many(
                session,
                patterns=patterns,
                list_address=list_address,
                reason=reason,
                created_by=ACTOR,
                now=_now(),
                progress=lambda count: progress.advance(storing, count),
            )
    click.echo(f"added {added}, already present {already}")


def list_held(settings: Settings, database: Database, *, as_json: bool) -> None:
    with database.transaction() as session:
        records = held.list_held(session)
    if as_json:
        _print_json([cli_render.held_json(record) for record in records])
    elif records:
        click.echo(cli_render.held_table(records, settings.reminders.timezone))
    else:
        click.echo("no held posts")


def _undecided(database: Database, held_id: int) -> None:
    with database.transaction() as session:
        record = held.get(session, held_id)
    if record is None:
        raise Refused(f"there is no held post {held_id}")
    if record.state != held.HELD:
        raise Refused(f"held post {held_id} was already {record.state}")


def release_held(settings: Settings, database: Database, *, held_id: int) -> None:
    _undecided(database, held_id)
    with database.transaction() as session:
        record = held.release(session, held_id, ACTOR, _now())
    if record is None:
        raise Refused(f"held post {held_id} was decided by someone else just now")
    click.echo(f"released held post {held_id} to {record.list}")


def discard_held(settings: Settings, database: Database, *, held_id: int) -> None:
    _undecided(database, held_id)
    with database.transaction() as session:
        record = held.discard(session, held_id, ACTOR, _now())
    if record is None:
        raise Refused(f"held post {held_id} was decided by someone else just now")
    click.echo(f"discarded held post {held_id} (to {record.list})")
