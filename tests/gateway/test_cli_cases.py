"""`ingest` and `cases list/show/export` through the real command line (SPEC section 9).

An empty message: `ingest` exits 75, like any other failure to store, with "the
message is empty" on stderr. Through a pipe an MTA never hands over an empty
message (Postfix alone adds Received:), so empty input means the delivery is
broken; a deferral keeps the real message in the MTA's queue until it is fixed.
"""

from __future__ import annotations

import json
import mailbox
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.pipeline import Pipeline
from storage.models import Case, InboxEntry, OutboxEntry
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_end_to_end import OUTBOX_BOUND, start
from tests.serve_process import cli

REPORT = (
    b"Return-Path: <rita@example.net>\r\nX-Original-To: conduct@example.org\r\n"
    b"Delivered-To: conduct@example.org\r\n"
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <cli-rep1@example.net>\r\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nSomeone was rude to me at the talk.\r\n"
)
SUMMARY_KEYS = {
    "number",
    "status",
    "subject",
    "reporter",
    "anonymous",
    "urgent",
    "assignee",
    "outcome",
    "escalated",
    "accused_notified",
    "imported",
    "expunge_at",
    "created_at",
    "updated_at",
}
CASE_KEYS = SUMMARY_KEYS | {"participants", "messages", "events", "bans", "sanctions"}
MESSAGE_KEYS = {"message_id", "direction", "kind", "sender", "recipients", "subject", "at", "rule"}


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def report(number: int, *head: bytes) -> bytes:
    """A distinct report; `head` lines replace the envelope headers of REPORT."""
    raw = REPORT.replace(b"cli-rep1@", f"cli-rep{number}@".encode())
    if head:
        raw = b"".join(line + b"\r\n" for line in head) + raw.split(b"\r\n", 3)[3]
    return raw


def ingest(gw: Gateway, *args: str, stdin: bytes | None = None) -> int:
    result = cli(gw.path, "ingest", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"stored as ")
    return int(result.stdout.split()[-1])


def process(gw: Gateway) -> None:
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def inbox_rows(gw: Gateway) -> list[InboxEntry]:
    with gw.database.transaction() as session:
        return list(session.execute(select(InboxEntry).order_by(InboxEntry.id)).scalars())


def envelope(gw: Gateway, entry: int) -> tuple[str | None, list[str]]:
    row = next(r for r in inbox_rows(gw) if r.id == entry)
    return row.envelope_sender, json.loads(row.envelope_recipients)


def outbox_rows(gw: Gateway) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars())


def case_count(gw: Gateway) -> int:
    with gw.database.transaction() as session:
        return int(session.execute(select(func.count()).select_from(Case)).scalar_one())


def run_json(gw: Gateway, *args: str) -> Any:
    result = cli(gw.path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bare(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


def assert_iso_with_offset(value: str | None) -> None:
    assert value is not None
    assert datetime.fromisoformat(value).utcoffset() is not None, value


# ingest


def test_ingest_of_a_file_stores_one_inbox_row(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "report.eml").write_bytes(REPORT)
    entry = ingest(gw, str(tmp_path / "report.eml"))
    [row] = inbox_rows(gw)
    assert row.id == entry
    assert row.source == "ingest"
    assert row.raw == REPORT
    assert row.message_id == "cli-rep1@example.net"


def test_the_same_message_twice_by_file_and_stdin_is_one_row_and_one_case(
    gw: Gateway, tmp_path: Path
) -> None:
    (tmp_path / "report.eml").write_bytes(REPORT)
    first = ingest(gw, str(tmp_path / "report.eml"))
    again = ingest(gw, str(tmp_path / "report.eml"))
    # The same message piped with bare LF is the same message once normalised.
    piped = ingest(gw, stdin=REPORT.replace(b"\r\n", b"\n"))
    assert first == again == piped
    assert len(inbox_rows(gw)) == 1
    process(gw)
    assert case_count(gw) == 1
    assert sorted(r.kind for r in outbox_rows(gw)) == ["acknowledgement", "copy", "copy"]


def test_ingest_reads_stdin_and_normalises_bare_newlines(gw: Gateway) -> None:
    entry = ingest(gw, stdin=REPORT.replace(b"\r\n", b"\n"))
    [row] = inbox_rows(gw)
    assert row.id == entry
    assert row.raw == REPORT


def test_sender_and_repeated_recipient_options_override_the_headers(gw: Gateway) -> None:
    entry = ingest(
        gw,
        "--sender",
        "someone@example.com",
        "--recipient",
        "conduct+director@example.org",
        "--recipient",
        "conduct@example.org",
        stdin=REPORT,
    )
    assert envelope(gw, entry) == (
        "someone@example.com",
        ["conduct+director@example.org", "conduct@example.org"],
    )


@pytest.mark.parametrize(
    ("head", "recipients"),
    [
        pytest.param(
            (
                b"X-Original-To: conduct+director@example.org",
                b"Delivered-To: conduct+moderate@example.org",
                b"X-Original-To: conduct@example.org",
            ),
            ["conduct+director@example.org"],
            id="topmost-x-original-to",
        ),
        pytest.param(
            (
                b"Delivered-To: conduct+moderate@example.org",
                b"Delivered-To: conduct@example.org",
            ),
            ["conduct+moderate@example.org"],
            id="topmost-delivered-to",
        ),
        pytest.param(
            (
                b"To: Someone <someone@example.com>, conduct+director@example.org",
                b"Cc: conduct@example.org, other@lists.example.org",
            ),
            ["conduct+director@example.org", "conduct@example.org"],
            id="to-and-cc-at-the-conduct-domain",
        ),
    ],
)
def test_without_options_the_recipients_come_from_the_headers(
    gw: Gateway, head: tuple[bytes, ...], recipients: list[str]
) -> None:
    raw = report(2, b"Return-Path: <rita@example.net>", *head)
    entry = ingest(gw, stdin=raw)
    assert envelope(gw, entry) == ("rita@example.net", recipients)


def test_a_null_return_path_stores_no_sender_and_gets_no_acknowledgement(gw: Gateway) -> None:
    raw = report(3, b"Return-Path: <>", b"X-Original-To: conduct@example.org")
    entry = ingest(gw, stdin=raw)
    assert envelope(gw, entry) == (None, ["conduct@example.org"])
    process(gw)
    assert case_count(gw) == 1
    assert sorted((r.kind, r.recipient) for r in outbox_rows(gw)) == [
        ("copy", "alice@example.org"),
        ("copy", "bob@example.org"),
    ]
    events = run_json(gw, "cases", "show", "1")["events"]
    assert "acknowledgement-suppressed" in [e["action"] for e in events]


def test_an_empty_message_is_refused_with_exit_75(gw: Gateway) -> None:
    for data in (b"", b"\r\n\n  \n"):
        result = cli(gw.path, "ingest", stdin=data)
        assert result.returncode == 75
        assert b"the message is empty" in result.stderr
    assert inbox_rows(gw) == []


def test_a_configuration_error_exits_75_not_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[gateway]\nconduct_address = not-an-address\n", encoding="utf-8")
    result = cli(bad, "ingest", stdin=REPORT)
    assert result.returncode == 75
    assert b"[gateway] conduct_address" in result.stderr
    missing = cli(tmp_path / "missing.ini", "ingest", stdin=REPORT)
    assert missing.returncode == 75
    assert b"missing.ini" in missing.stderr


@pytest.mark.parametrize("broken", ["parent-is-a-file", "not-a-database", "no-schema", "no-server"])
def test_a_database_that_cannot_store_exits_75(tmp_path: Path, broken: str) -> None:
    (tmp_path / "blocker").write_bytes(b"a file where a directory should be")
    (tmp_path / "garbage.db").write_bytes(b"this is not an SQLite database\n" * 200)
    url = {
        "parent-is-a-file": f"sqlite:///{tmp_path / 'blocker' / 'state' / 'gateway.db'}",
        "not-a-database": f"sqlite:///{tmp_path / 'garbage.db'}",
        "no-schema": f"sqlite:///{tmp_path / 'empty.db'}",
        "no-server": "postgresql+psycopg://postgres@127.0.0.1:1/gateway",
    }[broken]
    config = tmp_path / "gateway.ini"
    config.write_text(
        "[gateway]\nconduct_address = conduct@example.org\nstaff = alice@example.org\n"
        f"executive_director = ed@example.org\nsecret_file = secret\n[storage]\nurl = {url}\n",
        encoding="utf-8",
    )
    result = cli(config, "ingest", stdin=REPORT)
    assert result.returncode == 75, result.stderr
    assert b"could not store the message" in result.stderr
    assert result.stdout == b""


# cases list / show


def test_cases_list_is_newest_first_with_the_scalar_keys_and_a_message_count(
    gw: Gateway,
) -> None:
    for number in (1, 2, 3):
        ingest(gw, stdin=report(number))
    process(gw)
    found = run_json(gw, "cases", "list")
    assert [c["number"] for c in found] == [3, 2, 1]
    for case in found:
        assert set(case) == SUMMARY_KEYS | {"messages"}
        assert case["messages"] == 4  # the report, its acknowledgement, two staff copies
        assert case["status"] == "new"
        assert case["reporter"] == "rita@example.net"
        assert case["imported"] is False
        assert case["expunge_at"] is None
        assert_iso_with_offset(case["created_at"])
        assert_iso_with_offset(case["updated_at"])
    assert [c["number"] for c in run_json(gw, "cases", "list", "--status", "new")] == [3, 2, 1]
    assert run_json(gw, "cases", "list", "--status", "waiting") == []
    text = cli(gw.path, "cases", "list")
    assert text.returncode == 0
    assert [line.split()[0] for line in text.stdout.decode().splitlines()] == ["#3", "#2", "#1"]


def test_cases_list_puts_imported_older_cases_below_live_ones(gw: Gateway, tmp_path: Path) -> None:
    """SPEC section 9: newest first; imported cases keep their original (older) dates."""
    from tests.gateway.test_import import START, mail, write_mbox

    ingest(gw, stdin=report(1))
    process(gw)
    past = [
        mail(f"old-{n}@example.net", f"old{n}@example.net", "conduct@example.org", "Old", at)
        for n, at in ((1, START), (2, START + timedelta(days=1)))
    ]
    result = cli(gw.path, "import", str(write_mbox(tmp_path / "past.mbox", past)))
    assert result.returncode == 0, result.stderr
    found = run_json(gw, "cases", "list")
    assert [(c["number"], c["imported"]) for c in found] == [(1, False), (3, True), (2, True)]
    text = cli(gw.path, "cases", "list").stdout.decode()
    assert [line.split()[0] for line in text.splitlines()] == ["#1", "#3", "#2"]


def test_cases_show_json_has_every_key_of_the_case_shape(gw: Gateway) -> None:
    ingest(gw, stdin=REPORT)
    process(gw)
    case = run_json(gw, "cases", "show", "1")
    assert set(case) == CASE_KEYS
    assert case["number"] == 1
    assert case["subject"] == "Harassment at the meetup"
    assert case["reporter"] == "rita@example.net"
    assert case["imported"] is False
    assert case["bans"] == []
    assert case["sanctions"] == []
    assert {(p["address"], p["role"]) for p in case["participants"]} == {
        ("rita@example.net", "reporter"),
        ("alice@example.org", "staff"),
        ("bob@example.org", "staff"),
    }
    assert all(set(p) == {"address", "role"} for p in case["participants"])
    for message in case["messages"]:
        assert set(message) == MESSAGE_KEYS
        assert not message["message_id"].startswith("<")
        assert not message["message_id"].endswith(">")
        assert message["direction"] in ("in", "out")
        assert isinstance(message["recipients"], list)
        assert_iso_with_offset(message["at"])
    incoming = [m for m in case["messages"] if m["direction"] == "in"]
    assert incoming == [
        {
            "message_id": "cli-rep1@example.net",
            "direction": "in",
            "kind": "report",
            "sender": "rita@example.net",
            "recipients": ["conduct@example.org"],
            "subject": "Harassment at the meetup",
            "at": incoming[0]["at"],
            "rule": "new-case",
        }
    ]
    outgoing = sorted(tuple(m["recipients"]) for m in case["messages"] if m["direction"] == "out")
    assert outgoing == [("alice@example.org",), ("bob@example.org",), ("rita@example.net",)]
    assert case["events"]
    for event in case["events"]:
        assert set(event) == {"at", "actor", "action", "detail"}
        assert_iso_with_offset(event["at"])
    assert case["events"][0]["action"] == "case-opened"
    for key in ("created_at", "updated_at"):
        assert_iso_with_offset(case[key])
    text = cli(gw.path, "cases", "show", "1")
    assert text.returncode == 0
    assert text.stdout.startswith(b"Case #1: Harassment at the meetup")


def test_an_unknown_case_exits_1(gw: Gateway, tmp_path: Path) -> None:
    for args in (("show", "7"), ("show", "7", "--json"), ("export", "7")):
        result = cli(gw.path, "cases", *args)
        assert result.returncode == 1, args
        assert b"no case #7" in result.stderr
    assert not (tmp_path / "case-7.mbox").exists()


def test_import_with_a_bad_secret_exits_2_naming_the_key(gw: Gateway, tmp_path: Path) -> None:
    """A configuration error, as `serve` reports the same secret (SPEC section 9)."""
    (tmp_path / "secret").write_bytes(b"short")
    (tmp_path / "past.mbox").write_bytes(b"")
    result = cli(gw.path, "import", str(tmp_path / "past.mbox"))
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr
    assert b"[gateway] secret_file: " in result.stderr


# cases export


def test_export_to_a_directory_that_does_not_exist_exits_1_naming_it(
    gw: Gateway, tmp_path: Path
) -> None:
    ingest(gw, stdin=REPORT)
    process(gw)
    out = tmp_path / "nonexistent" / "x.mbox"
    result = cli(gw.path, "cases", "export", "1", "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr
    assert f"cannot write {out}: ".encode() in result.stderr
    assert not out.parent.exists()


def test_export_writes_every_message_in_and_out_byte_for_byte_and_the_json(
    gw: Gateway, tmp_path: Path
) -> None:
    ingest(gw, stdin=REPORT)
    process(gw)
    out = tmp_path / "exports" / "one.mbox"
    out.parent.mkdir()
    result = cli(gw.path, "cases", "export", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    box = mailbox.mbox(out, create=False)
    try:
        exported = {
            bare(str(box.get_message(key)["Message-ID"])): box.get_bytes(key)
            for key in box.iterkeys()
        }
    finally:
        box.close()
    sent = {bare(r.message_id): r.raw for r in outbox_rows(gw)}
    assert len(sent) == 3
    assert set(exported) == {"cli-rep1@example.net"} | set(sent)
    assert exported["cli-rep1@example.net"] == REPORT
    for message_id, raw in sent.items():
        assert exported[message_id] == raw
    shown = run_json(gw, "cases", "show", "1")
    assert {m["message_id"] for m in shown["messages"]} == set(exported)
    beside = json.loads(out.with_name("one.mbox.json").read_text(encoding="utf-8"))
    assert beside == shown


def test_export_defaults_to_case_n_mbox_in_the_current_directory(
    gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(gw, stdin=report(1))
    ingest(gw, stdin=report(2))
    process(gw)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = cli(gw.path, "cases", "export", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in here.iterdir()) == ["case-2.mbox", "case-2.mbox.json"]
    box = mailbox.mbox(here / "case-2.mbox", create=False)
    try:
        assert len(box) == 4
    finally:
        box.close()
    assert json.loads((here / "case-2.mbox.json").read_text(encoding="utf-8"))["number"] == 2


# The rate limit, end to end


def test_seven_reports_in_an_hour_get_five_acknowledgements_and_fourteen_staff_copies(
    tmp_path: Path, database_url: str
) -> None:
    running = start(tmp_path, database_url)
    try:
        for number in range(1, 8):
            refused = running.send("rita@example.net", ["conduct@example.org"], report(number))
            assert refused == {}

        def acknowledgements(found: list[Any]) -> list[Any]:
            return [m for m in found if m.mail_from in ("", "<>")]

        def staff(found: list[Any]) -> list[Any]:
            return [m for m in found if m.mail_from.startswith("conduct+bounce-")]

        found = running.smarthost.wait_for(
            lambda m: len(acknowledgements(m)) >= 5 and len(staff(m)) >= 14, OUTBOX_BOUND
        )
        assert sorted(m.rcpt_tos[0] for m in staff(found)) == (
            ["alice@example.org"] * 7 + ["bob@example.org"] * 7
        )
        cases = json.loads(cli(running.config, "cases", "list", "--json").stdout)
        assert [c["number"] for c in cases] == [7, 6, 5, 4, 3, 2, 1]
        limited = []
        for number in range(1, 8):
            shown = json.loads(cli(running.config, "cases", "show", str(number), "--json").stdout)
            actions = {e["action"] for e in shown["events"]}
            if "acknowledgement-rate-limited" in actions:
                limited.append(number)
        assert len(limited) == 2
        time.sleep(1)
        acks = acknowledgements(running.smarthost.messages)
        assert [m.rcpt_tos for m in acks] == [("rita@example.net",)] * 5
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()
