"""`bans …` and `held …` (SPEC section 9): JSON shapes, exit 1 refusals, imports of each format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.cli import main
from rules.bans import parse_pattern
from storage import bans, held, migrate
from storage.db import Database
from storage.models import AuditEvent, Case, OutboxEntry

DEV = "dev@lists.example.org"
BAN_KEYS = {
    "id",
    "pattern",
    "list",
    "reason",
    "created_by",
    "created_at",
    "expires_at",
    "case",
    "active",
    "interim",
}
HELD_KEYS = {"id", "list", "sender", "subject", "reason", "held_at"}


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "gateway.ini"
    path.write_text(
        "[gateway]\nconduct_address = conduct@example.org\n"
        "staff = Alice Example <alice@example.org>, bob@example.org\n"
        "executive_director = ed@example.org\nsecret_file = state/secret\n"
        f"[storage]\nurl = {url}\n"
        "[relay]\nlists = dev@lists.example.org, announce@lists.example.org\n"
        "list_domains = groups.example.org\n"
        "[reminders]\ntimezone = Europe/Berlin\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cfg(tmp_path: Path, database_url: str) -> Path:
    """A configuration whose database is migrated, on SQLite and on PostgreSQL."""
    return write_config(tmp_path, database_url)


@pytest.fixture
def sqlite_cfg(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    return write_config(tmp_path, url)


def run(cfg: Path, *words: str) -> Result:
    return CliRunner().invoke(main, [*words, "-c", str(cfg)])


def ok(cfg: Path, *words: str) -> str:
    result = run(cfg, *words)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(cfg: Path, *words: str, code: int = 1) -> str:
    result = run(cfg, *words)
    assert result.exit_code == code, result.output
    return result.stderr


def as_json(cfg: Path, *words: str) -> Any:
    return json.loads(ok(cfg, *words, "--json"))


@contextmanager
def transaction(cfg: Path) -> Iterator[Session]:
    """A unit of work on the configured database, as another process would do it."""
    url = cfg.read_text().split("url = ", 1)[1].split("\n", 1)[0]
    database = Database(url)
    try:
        with database.transaction() as session:
            yield session
    finally:
        database.dispose()


def with_offset(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text
    return moment


def test_a_ban_is_added_listed_as_json_and_removed(cfg: Path) -> None:
    output = ok(cfg, "bans", "add", "User+x@Example.COM", "--list", "DEV@lists.example.org")
    assert "added ban 1: user@example.com on dev@lists.example.org" in output
    [ban] = as_json(cfg, "bans", "list")
    assert set(ban) >= BAN_KEYS
    assert ban["id"] == 1
    assert ban["pattern"] == "user@example.com"
    assert ban["list"] == DEV
    assert ban["created_by"] == "cli"
    assert ban["active"] is True
    assert ban["interim"] is False
    assert ban["expires_at"] is None
    assert ban["case"] is None
    assert ban["reason"] is None
    with_offset(ban["created_at"])
    assert "user@example.com" in ok(cfg, "bans", "list")
    assert "lifted ban 1" in ok(cfg, "bans", "remove", "1")
    assert as_json(cfg, "bans", "list") == []
    [lifted] = as_json(cfg, "bans", "list", "--all")
    assert lifted["active"] is False
    assert "already lifted" in refused(cfg, "bans", "remove", "1")
    assert "there is no ban 99" in refused(cfg, "bans", "remove", "99")
    with transaction(cfg) as session:
        events = session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars()
        assert list(events) == ["ban-added", "ban-lifted"]


def test_a_timed_ban_ends_and_stays_visible_with_all(cfg: Path) -> None:
    ok(cfg, "bans", "add", "*@spam.example", "--for", "2w", "--reason", "spam wave")
    [ban] = as_json(cfg, "bans", "list")
    ends = with_offset(ban["expires_at"])
    assert timedelta(days=13) < ends - datetime.now(UTC) <= timedelta(days=14)
    assert ban["reason"] == "spam wave"
    past = datetime.now(UTC) - timedelta(days=3)
    with transaction(cfg) as session:
        bans.add(
            session,
            pattern=parse_pattern("old@example.net"),
            list_address=None,
            reason=None,
            created_by="cli",
            now=past,
            expires_at=past + timedelta(days=1),
        )
    assert [b["pattern"] for b in as_json(cfg, "bans", "list")] == ["*@spam.example"]
    every = as_json(cfg, "bans", "list", "--all")
    assert [(b["pattern"], b["active"]) for b in every] == [
        ("*@spam.example", True),
        ("old@example.net", False),
    ]
    assert "expired" in ok(cfg, "bans", "list", "--all")


def test_until_means_midnight_in_the_configured_zone(cfg: Path) -> None:
    ok(cfg, "bans", "add", "a@example.net", "--until", "2099-01-02")
    [ban] = as_json(cfg, "bans", "list")
    assert with_offset(ban["expires_at"]) == datetime(2099, 1, 1, 23, 0, tzinfo=UTC)


def test_bad_input_is_refused_naming_what_was_wrong(cfg: Path) -> None:
    assert "not a served list" in refused(cfg, "bans", "add", "a@example.net", "--list", "x@y.org")
    assert "in the past" in refused(cfg, "bans", "add", "a@example.net", "--until", "2020-01-01")
    assert "bad ban pattern" in refused(cfg, "bans", "add", "a*b@example.net")
    assert "RE2 refuses" in refused(cfg, "bans", "add", "re:(a)\\1")
    assert "there is no case 7" in refused(cfg, "bans", "add", "a@example.net", "--case", "7")
    both = ("bans", "add", "a@example.net", "--for", "1d", "--until", "2099-01-01")
    assert "exclude each other" in refused(cfg, *both, code=2)
    assert "expected a duration" in refused(cfg, "bans", "add", "a@x.net", "--for", "soon", code=2)
    # Past timedelta's range: an OverflowError and a traceback, once.
    too_long = refused(cfg, "bans", "add", "a@x.net", "--for", "200000000w", code=2)
    assert "expected a duration of at most 3650d" in too_long
    assert as_json(cfg, "bans", "list", "--all") == []


def test_a_second_ban_on_the_same_pattern_and_scope_is_refused(cfg: Path) -> None:
    ok(cfg, "bans", "add", "dup@example.net")
    message = refused(cfg, "bans", "add", "Dup+x@example.net", "--for", "1d")
    assert "dup@example.net is already banned on all lists by ban 1" in message
    ok(cfg, "bans", "add", "dup@example.net", "--list", DEV)
    assert len(as_json(cfg, "bans", "list")) == 2


def test_a_list_in_a_list_domain_is_served(cfg: Path) -> None:
    ok(cfg, "bans", "add", "a@example.net", "--list", "anything@groups.example.org")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("Alice+x@example.org", "protected address alice@example.org"),
        ("ed@example.org", "protected address ed@example.org"),
        ("conduct@example.org", "protected address conduct@example.org"),
        ("*@example.org", "every address at the local domain example.org"),
        ("re:.*@example\\.org", "every address at the local domain example.org"),
    ],
)
def test_a_protected_pattern_needs_force(cfg: Path, pattern: str, why: str) -> None:
    message = refused(cfg, "bans", "add", pattern)
    assert why in message
    assert "--force" in message
    assert as_json(cfg, "bans", "list") == []
    ok(cfg, "bans", "add", pattern, "--force")
    assert len(as_json(cfg, "bans", "list")) == 1


def test_a_ban_linked_to_a_case_is_interim_until_the_accused_is_notified(cfg: Path) -> None:
    now = datetime.now(UTC)
    with transaction(cfg) as session:
        session.add(
            Case(number=1, status="new", last_activity_at=now, created_at=now, updated_at=now)
        )
        session.add(
            Case(
                number=2,
                status="investigating",
                accused_notified_at=now,
                last_activity_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    ok(cfg, "bans", "add", "a@example.net", "--case", "1")
    ok(cfg, "bans", "add", "b@example.net", "--case", "2")
    first, second = as_json(cfg, "bans", "list")
    assert (first["case"], first["interim"]) == (1, True)
    assert (second["case"], second["interim"]) == (2, False)


def test_check_names_the_ban_that_refuses_a_post(cfg: Path) -> None:
    ok(cfg, "bans", "add", "*@spam.example", "--list", DEV)
    result = as_json(cfg, "bans", "check", "Someone@SPAM.example", "--list", DEV)
    assert set(result) >= {"address", "list", "banned", "ban"}
    assert result["address"] == "Someone@SPAM.example"
    assert result["list"] == DEV
    assert result["banned"] is True
    assert result["ban"]["id"] == 1
    assert set(result["ban"]) >= BAN_KEYS
    other = as_json(
        cfg, "bans", "check", "someone@spam.example", "--list", "announce@lists.example.org"
    )
    assert other["banned"] is False
    assert other["ban"] is None
    # Without --list every ban counts, whatever its list.
    anywhere = as_json(cfg, "bans", "check", "someone@spam.example")
    assert anywhere["list"] is None
    assert anywhere["banned"] is True
    assert anywhere["ban"]["list"] == DEV
    assert "is refused on dev@lists.example.org by ban 1" in ok(
        cfg, "bans", "check", "x@spam.example"
    )
    assert "may post to every list" in ok(cfg, "bans", "check", "x@fine.example")
    assert "not a served list" in refused(cfg, "bans", "check", "x@a.example", "--list", "n@x.org")
    assert "not an address" in refused(cfg, "bans", "check", "nobody")


IMPORT = """\
# a Sympa blocklist.txt, a Mailman 3 export and our own patterns, mixed

troll@example.net
*@spam.example
*@*.bulk.example
re:.*@badhost\\.example
sp*mmer@*.example.com
^.*@mailman\\.example$
   # an indented comment
"""


def test_import_reads_every_format_and_skips_comments(cfg: Path, tmp_path: Path) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text(IMPORT, encoding="utf-8")
    assert ok(cfg, "bans", "import", str(path), "--list", DEV, "--reason", "imported") == (
        "added 6, already present 0\n"
    )
    found = as_json(cfg, "bans", "list")
    assert [b["pattern"] for b in found] == [
        "troll@example.net",
        "*@spam.example",
        "*@*.bulk.example",
        "re:.*@badhost\\.example",
        "re:sp.*mmer@.*\\.example\\.com",
        "re:(?i:.*@mailman\\.example$).*",
    ]
    assert {(b["list"], b["reason"]) for b in found} == {(DEV, "imported")}
    for address in (
        "Troll+tag@example.net",
        "a@spam.example",
        "a@x.bulk.example",
        "z@badhost.example",
        "spaaammer@lists.example.com",
        "Z@MAILMAN.example",
    ):
        assert as_json(cfg, "bans", "check", address, "--list", DEV)["banned"], address
    assert not as_json(cfg, "bans", "check", "a@bulk.example", "--list", DEV)["banned"]
    assert ok(cfg, "bans", "import", str(path), "--list", DEV) == "added 0, already present 6\n"
    # The same patterns for all lists are a different scope.
    assert ok(cfg, "bans", "import", str(path)) == "added 6, already present 0\n"
    with transaction(cfg) as session:
        events = session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars()
        assert list(events) == ["bans-imported", "bans-imported"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("ok@example.net\n\nbad*pattern*@\n", "line 3: "),
        ("ok@example.net\nre:(a)\\1\n", "line 2: bad ban pattern"),
        ("# staff\nbob@example.org\n", "line 2: bob@example.org would catch the protected address"),
        ("*@example.org\n", "every address at the local domain example.org"),
    ],
)
def test_one_bad_line_refuses_the_whole_file(
    cfg: Path, tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "bans.txt"
    path.write_text(content, encoding="utf-8")
    message = refused(cfg, "bans", "import", str(path))
    assert f"{path}: line " in message
    assert why in message
    assert "nothing was imported" in message
    assert as_json(cfg, "bans", "list", "--all") == []


def test_import_refuses_a_file_that_is_not_utf8(sqlite_cfg: Path, tmp_path: Path) -> None:
    path = tmp_path / "bans.txt"
    path.write_bytes(b"a@example.net\nb\xff@example.net\n")
    assert "line 2: not UTF-8" in refused(sqlite_cfg, "bans", "import", str(path))


@pytest.mark.slow
def test_a_file_of_100000_lines_imports(sqlite_cfg: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    lines = []
    for i in range(100_000):
        if i % 10 == 0:
            lines.append(f"*@spam{i}.example")
        elif i % 10 == 1:
            lines.append(f"^bot{i}-.*@example\\.net$")
        else:
            lines.append(f"user{i}@example.net")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert ok(sqlite_cfg, "bans", "import", str(path)) == "added 100000, already present 0\n"
    assert as_json(sqlite_cfg, "bans", "check", "Bot99991-x@example.net")["banned"]
    with transaction(sqlite_cfg) as session:
        assert len(bans.load_active(session, datetime.now(UTC))) == 100_000


def hold(cfg: Path, list_address: str = DEV) -> int:
    with transaction(cfg) as session:
        return held.hold(
            session,
            list_address=list_address,
            sender="troll@example.net",
            subject="flame",
            reason="ban 1 (From)",
            ban_id=1,
            case=None,
            envelope_sender="troll@example.net",
            envelope_recipients=[list_address],
            raw=b"Message-ID: <m1@example.net>\r\nSubject: flame\r\n\r\nbody\r\n",
            now=datetime.now(UTC),
        )


def test_held_posts_are_listed_released_and_discarded(cfg: Path) -> None:
    assert as_json(cfg, "held", "list") == []
    assert "no held posts" in ok(cfg, "held", "list")
    first, second = hold(cfg), hold(cfg, "announce@lists.example.org")
    listed = as_json(cfg, "held", "list")
    assert [h["id"] for h in listed] == [first, second]
    assert set(listed[0]) >= HELD_KEYS
    assert listed[0]["list"] == DEV
    assert listed[0]["sender"] == "troll@example.net"
    assert listed[0]["subject"] == "flame"
    assert listed[0]["reason"] == "ban 1 (From)"
    with_offset(listed[0]["held_at"])
    assert "flame" in ok(cfg, "held", "list")
    assert f"released held post {first} to {DEV}" in ok(cfg, "held", "release", str(first))
    assert "discarded held post" in ok(cfg, "held", "discard", str(second))
    assert as_json(cfg, "held", "list") == []
    assert "already released" in refused(cfg, "held", "discard", str(first))
    assert "already discarded" in refused(cfg, "held", "release", str(second))
    assert "there is no held post 99" in refused(cfg, "held", "release", "99")
    with transaction(cfg) as session:
        row = session.execute(select(OutboxEntry)).scalar_one()
        assert (row.route, row.recipient, row.envelope_sender) == (
            "upstream",
            DEV,
            "troll@example.net",
        )
        assert row.raw is not None
        assert row.raw.startswith(b"Message-ID: <m1@example.net>")


def test_an_unmigrated_database_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    assert "db upgrade" in refused(cfg, "bans", "list", code=2)


def test_every_new_command_has_help() -> None:
    for words in (
        ["bans"],
        ["bans", "list"],
        ["bans", "add"],
        ["bans", "remove"],
        ["bans", "import"],
        ["bans", "check"],
        ["held"],
        ["held", "list"],
        ["held", "release"],
        ["held", "discard"],
    ):
        result = CliRunner().invoke(main, [*words, "--help"])
        assert result.exit_code == 0, words
        assert "-c, --config FILE" in result.output
