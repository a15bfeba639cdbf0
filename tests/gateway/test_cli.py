"""The command line: help, version, -c anywhere, check-config, db upgrade, serve and SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "gateway"]


def write_config(tmp_path: Path, url: str | None = None, extra: str = "") -> Path:
    path = tmp_path / "gateway.ini"
    path.write_text(
        "[gateway]\nconduct_address = conduct@example.org\nstaff = alice@example.org\n"
        "executive_director = ed@example.org\nsecret_file = state/secret\n"
        f"[storage]\nurl = {url or 'sqlite:///state/gateway.db'}\n"
        "[outbound]\nsmarthost = maildir:state/outgoing\n"
        "[smtp]\nlisten = 127.0.0.1:0\n" + extra,
        encoding="utf-8",
    )
    return path


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "check-config", "db", "audit"):
        assert command in result.output


def test_every_subcommand_has_help() -> None:
    for words in (["serve"], ["check-config"], ["db"], ["db", "upgrade"], ["audit", "verify"]):
        result = CliRunner().invoke(main, [*words, "--help"])
        assert result.exit_code == 0, words
        assert "-c, --config FILE" in result.output


def test_version_is_printed() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "conduct-gateway, version" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "{cfg}", "check-config"],
        ["check-config", "-c", "{cfg}"],
        ["--config={cfg}", "check-config"],
    ],
)
def test_the_config_option_stands_before_or_after_the_subcommand(
    tmp_path: Path, argv: list[str]
) -> None:
    cfg = write_config(tmp_path)
    result = CliRunner().invoke(main, [a.replace("{cfg}", str(cfg)) for a in argv])
    assert result.exit_code == 0, result.output
    assert "conduct_address = conduct@example.org" in result.output


def test_the_config_option_may_follow_any_word(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for argv in (["db", "-c", str(cfg), "upgrade"], ["db", "upgrade", "-c", str(cfg)]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 0, result.output
        assert "database at revision" in result.output


def test_the_environment_names_the_file_when_no_option_does(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    result = CliRunner().invoke(main, ["check-config"], env={"CONDUCT_GATEWAY_CONFIG": str(cfg)})
    assert result.exit_code == 0


def test_check_config_on_the_example_exits_0() -> None:
    result = subprocess.run(
        [*EXE, "check-config", "-c", str(ROOT / "config.example.ini")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "[reminders]" in result.stdout


def test_a_bad_value_exits_2_naming_file_section_and_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra="[reminders]\nacknowledge_within = soon\n")
    result = subprocess.run(
        [*EXE, "check-config", "-c", str(cfg)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert f"{cfg}: [reminders] acknowledge_within: 'soon': expected a duration" in result.stderr


def test_check_config_masks_the_database_password(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, url="postgresql+psycopg://gw:hunter2@db.example.org/gw")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "secret").write_bytes(os.urandom(32))  # shared: never created
    result = CliRunner().invoke(main, ["check-config", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "postgresql+psycopg://gw:***@db.example.org/gw" in result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://gw@127.0.0.1:5432/gw?password=hunter2",
            "postgresql+psycopg://gw@127.0.0.1:5432/gw?password=***",
        ),
        (
            "postgresql+psycopg://gw:hunter1@db.example.org/gw?sslmode=require&sslpassword=hunter2",
            "postgresql+psycopg://gw:***@db.example.org/gw?sslmode=require&sslpassword=***",
        ),
    ],
)
def test_check_config_masks_a_password_in_the_query_string(
    tmp_path: Path, url: str, shown: str
) -> None:
    """psycopg honours `?password=`: it is as secret as the one before the `@`."""
    cfg = write_config(tmp_path, url=url)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "secret").write_bytes(os.urandom(32))
    result = CliRunner().invoke(main, ["check-config", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "hunter" not in result.output
    assert f"url = {shown}\n" in result.output


def start_serve(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EXE, "serve", "-c", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 30) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    process.kill()
    raise AssertionError(f"{needle!r} not logged; got:\n{''.join(seen)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_and_a_stop_signal_exits_0(tmp_path: Path, signum: int) -> None:
    cfg = write_config(tmp_path)
    process = start_serve(cfg)
    wait_for_line(process, "event=ready")
    process.send_signal(signum)
    assert process.wait(timeout=30) == 0
    secret = tmp_path / "state" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 32


def test_serve_refuses_a_secret_the_database_does_not_know_with_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    process = start_serve(cfg)
    wait_for_line(process, "event=ready")
    process.terminate()
    assert process.wait(timeout=30) == 0
    (tmp_path / "state" / "secret").write_bytes(os.urandom(32))
    result = subprocess.run(
        [*EXE, "serve", "-c", str(cfg)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 2  # a configuration error (SPEC section 9), not a failed check
    assert "does not match" in result.stderr


def test_serve_accepts_a_rotated_secret_and_records_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    process = start_serve(cfg)
    wait_for_line(process, "event=ready")
    process.terminate()
    process.wait(timeout=30)
    old = tmp_path / "state" / "secret"
    old.rename(tmp_path / "state" / "secret.old")
    old.write_bytes(os.urandom(32))
    cfg.write_text(
        cfg.read_text().replace(
            "secret_file = state/secret\n",
            "secret_file = state/secret\nprevious_secret_file = state/secret.old\n",
        )
    )
    process = start_serve(cfg)
    wait_for_line(process, "event=ready")
    process.terminate()
    assert process.wait(timeout=30) == 0
    result = CliRunner().invoke(main, ["audit", "verify", "-c", str(cfg)])
    assert result.exit_code == 0
    assert result.output.startswith("1 events")
    from sqlalchemy import select

    from gateway import config
    from storage.db import Database
    from storage.models import AuditEvent

    database = Database(config.load(cfg).storage.url)
    with database.transaction() as session:
        [event] = session.execute(select(AuditEvent)).scalars().all()
        assert (event.action, event.actor) == ("secret-rotated", "gateway")
    database.dispose()


@pytest.mark.postgres
def test_serve_with_postgresql_refuses_to_create_a_secret(
    tmp_path: Path,
    postgres: object,
) -> None:
    from tests.conftest import PostgresServer

    assert isinstance(postgres, PostgresServer)
    cfg = write_config(tmp_path, url=postgres.create())
    result = subprocess.run(
        [*EXE, "serve", "-c", str(cfg)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 2
    assert "must share one secret" in result.stderr
    assert not (tmp_path / "state" / "secret").exists()


def test_audit_verify_exits_1_naming_an_edited_event(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from gateway import config
    from storage import audit
    from storage.db import Database
    from storage.models import AuditEvent

    cfg = write_config(tmp_path)
    assert CliRunner().invoke(main, ["db", "upgrade", "-c", str(cfg)]).exit_code == 0
    database = Database(config.load(cfg).storage.url)
    with database.transaction() as session:
        for n in range(3):
            audit.append(
                session,
                at=datetime.now(UTC),
                action="status",
                actor="a@example.org",
                case=1,
                detail={"n": n},
            )
    ok = CliRunner().invoke(main, ["audit", "verify", "-c", str(cfg)])
    assert ok.exit_code == 0
    assert ok.output.startswith("3 events, latest link ")
    with database.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
    database.dispose()
    bad = CliRunner().invoke(main, ["audit", "verify", "-c", str(cfg)])
    assert bad.exit_code == 1
    assert "event 2 was edited" in bad.output


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT
    )


def test_audit_verify_on_a_database_never_upgraded_exits_2_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """As every other database command: the schema is checked first (SPEC section 9)."""
    cfg = write_config(tmp_path)
    result = run_cli("audit", "verify", "-c", str(cfg))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "run `conduct-gateway db upgrade`" in result.stderr
    assert not (tmp_path / "state").exists()


def test_audit_verify_on_an_empty_database_file_exits_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "gateway.db").write_bytes(b"")
    result = run_cli("audit", "verify", "-c", str(cfg))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "run `conduct-gateway db upgrade`" in result.stderr


# Every command that opens the database; `ingest` has its own test (it always said 75).
DATABASE_COMMANDS = [
    ["db", "upgrade"],
    ["audit", "verify"],
    ["bans", "list"],
    ["bans", "add", "x@example.net"],
    ["bans", "check", "x@example.net"],
    ["bans", "remove", "1"],
    ["held", "list"],
    ["held", "release", "1"],
    ["cases", "list"],
    ["cases", "show", "1"],
    ["cases", "export", "1"],
    ["cases", "purge", "--dry-run"],
    ["import", "{mbox}"],
    ["serve"],
]


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
def test_a_database_that_cannot_be_reached_exits_75_naming_it_masked(
    tmp_path: Path, argv: list[str]
) -> None:
    """EX_TEMPFAIL, as `ingest` says it: nothing is wrong with the command, try it later."""
    from tests.components import free_port

    port = free_port()  # nothing listens there
    cfg = write_config(tmp_path, url=f"postgresql+psycopg://gw:hunter2@127.0.0.1:{port}/gw")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "secret").write_bytes(os.urandom(32))  # PostgreSQL: never created
    (tmp_path / "past.mbox").write_bytes(b"")
    words = [word.replace("{mbox}", str(tmp_path / "past.mbox")) for word in argv]
    result = run_cli(*words, "-c", str(cfg))
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"conduct-gateway: cannot use the database postgresql+psycopg://gw:***@127.0.0.1:{port}/gw"
    )
    assert "hunter2" not in result.stderr


def test_an_sqlite_database_whose_directory_cannot_be_made_exits_75(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"a file where a directory should be")
    cfg = write_config(tmp_path, url=f"sqlite:///{tmp_path / 'blocker' / 'gateway.db'}")
    result = run_cli("db", "upgrade", "-c", str(cfg))
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot use the database sqlite:///" in result.stderr
