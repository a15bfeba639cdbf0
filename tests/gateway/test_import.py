"""`import PATH` through the real command line: an mbox or Maildir filed into cases, twice."""

from __future__ import annotations

import json
import mailbox
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.models import Case, InboxEntry, Message, OutboxEntry
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.serve_process import cli

START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
REPORTS = 400
NOTES = 199  # staff replies; with the reports, the replies and one auto-reply: 1,000


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def mail(message_id: str, sender: str, to: str, subject: str, at: datetime, *extra: str) -> bytes:
    head = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: <{message_id}>",
        f"Date: {format_datetime(at)}",
        *extra,
    ]
    return ("\r\n".join(head) + f"\r\n\r\nThe text of {message_id}.\r\n").encode()


def report_date(index: int) -> datetime:
    return START + timedelta(hours=2 * index)


def past_correspondence() -> list[bytes]:
    """Reports from 150 senders, each followed by its reporter's reply (threaded only by
    In-Reply-To) and, for the first 199, a staff reply; last, an out-of-office reply."""
    found = []
    for index in range(REPORTS):
        at = report_date(index)
        reporter = f"reporter{index % 150}@example.net"
        report_id = f"report-{index}@example.net"
        found.append(mail(report_id, reporter, "conduct@example.org", f"Report {index}", at))
        found.append(
            mail(
                f"reply-{index}@example.net",
                reporter,
                "conduct@example.org",
                f"Re: Report {index}",
                at + timedelta(minutes=30),
                f"In-Reply-To: <{report_id}>",
            )
        )
        if index < NOTES:
            found.append(
                mail(
                    f"note-{index}@example.org",
                    "Alice Example <alice@example.org>",
                    reporter,
                    f"Re: Report {index}",
                    at + timedelta(minutes=45),
                    "Cc: conduct@example.org",
                    f"In-Reply-To: <{report_id}>",
                    f"References: <{report_id}>",
                )
            )
    found.append(
        mail(
            "away-1@example.com",
            "Away <away@example.com>",
            "conduct@example.org",
            "Out of office",
            START + timedelta(days=60),
            "Auto-Submitted: auto-replied",
        )
    )
    return found


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    """Written by hand as mail clients store it: `From ` lines and bare LF."""
    with path.open("wb") as file:
        for raw in messages:
            file.write(b"From sender@example.net Fri Mar  1 09:00:00 2024\n")
            file.write(raw.replace(b"\r\n", b"\n") + b"\n")
    return path


def counts(gw: Gateway) -> dict[str, int]:
    with gw.database.transaction() as session:
        return {
            model.__name__: int(
                session.execute(select(func.count()).select_from(model)).scalar_one()
            )
            for model in (Case, Message, InboxEntry, OutboxEntry)
        }


def import_path(gw: Gateway, path: Path) -> str:
    result = cli(gw.path, "import", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


@pytest.mark.slow
def test_an_mbox_of_1000_messages_is_filed_once_and_sends_nothing(
    gw: Gateway, tmp_path: Path
) -> None:
    messages = past_correspondence()
    assert len(messages) == 1000
    path = write_mbox(tmp_path / "past.mbox", messages)

    assert import_path(gw, path) == (
        "1000 messages: 400 cases opened, 599 joined a case, 1 unfiled, "
        "0 already imported, 0 failed"
    )
    after_first = counts(gw)
    assert after_first == {"Case": 400, "Message": 1000, "InboxEntry": 1000, "OutboxEntry": 0}

    listed = json.loads(cli(gw.path, "cases", "list", "--json").stdout)
    assert [c["number"] for c in listed] == list(range(REPORTS, 0, -1))
    for case in listed:
        index = case["number"] - 1
        assert case["imported"] is True
        assert case["status"] == "waiting"
        assert datetime.fromisoformat(case["created_at"]) == report_date(index)
        assert case["messages"] == (3 if index < NOTES else 2)
    assert datetime.fromisoformat(listed[-1]["created_at"]) == START  # the first message's Date

    first = json.loads(cli(gw.path, "cases", "show", "1", "--json").stdout)
    assert first["reporter"] == "reporter0@example.net"
    assert [(m["message_id"], m["kind"], m["rule"]) for m in first["messages"]] == [
        ("report-0@example.net", "report", "new-case"),
        ("reply-0@example.net", "correspondence", "reference"),
        ("note-0@example.org", "note", "reference"),
    ]
    assert [m["at"] for m in first["messages"]] == [
        "2024-03-01T09:00:00+00:00",
        "2024-03-01T09:30:00+00:00",
        "2024-03-01T09:45:00+00:00",
    ]
    assert all(m["direction"] == "in" for m in first["messages"])
    # A reporter with several reports: each reply joined its own report's case only.
    later = json.loads(cli(gw.path, "cases", "show", "151", "--json").stdout)
    assert later["reporter"] == "reporter0@example.net"
    assert [m["message_id"] for m in later["messages"]] == [
        "report-150@example.net",
        "reply-150@example.net",
        "note-150@example.org",
    ]
    with gw.database.transaction() as session:
        unfiled = session.execute(
            select(Message.kind).where(Message.case_number.is_(None))
        ).scalars()
        assert list(unfiled) == ["auto-reply"]

    assert import_path(gw, path) == (
        "1000 messages: 0 cases opened, 0 joined a case, 0 unfiled, 1000 already imported, 0 failed"
    )
    assert counts(gw) == after_first


def test_a_maildir_is_imported_and_a_second_run_adds_nothing(gw: Gateway, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    # Stored answers first: a Maildir has no order, the import files by Date.
    for raw in reversed(past_correspondence()[:3]):
        box.add(raw)
    box.close()
    assert import_path(gw, tmp_path / "Maildir") == (
        "3 messages: 1 cases opened, 2 joined a case, 0 unfiled, 0 already imported, 0 failed"
    )
    [case] = json.loads(cli(gw.path, "cases", "list", "--json").stdout)
    assert (case["imported"], case["status"], case["messages"]) == (True, "waiting", 3)
    assert datetime.fromisoformat(case["created_at"]) == START
    assert import_path(gw, tmp_path / "Maildir") == (
        "3 messages: 0 cases opened, 0 joined a case, 0 unfiled, 3 already imported, 0 failed"
    )
    assert counts(gw)["OutboxEntry"] == 0


def test_the_same_mail_by_mbox_and_maildir_is_imported_once(gw: Gateway, tmp_path: Path) -> None:
    messages = past_correspondence()[:3]
    import_path(gw, write_mbox(tmp_path / "past.mbox", messages))
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in messages:
        box.add(raw)
    box.close()
    assert import_path(gw, tmp_path / "Maildir").startswith("3 messages: 0 cases opened")
    assert counts(gw)["Case"] == 1


@pytest.mark.parametrize("kind", ["plain-directory", "single-message-file"])
def test_a_path_that_is_neither_an_mbox_nor_a_maildir_exits_1(
    gw: Gateway, tmp_path: Path, kind: str
) -> None:
    if kind == "plain-directory":
        path = tmp_path / "mail"
        path.mkdir()
        (path / "one.eml").write_bytes(past_correspondence()[0])
        expected = b"not a Maildir"
    else:
        path = tmp_path / "one.eml"
        path.write_bytes(past_correspondence()[0])
        expected = b"not an mbox file"
    result = cli(gw.path, "import", str(path))
    assert result.returncode == 1
    assert str(path).encode() in result.stderr
    assert expected in result.stderr
    assert counts(gw)["InboxEntry"] == 0


def live(gw: Gateway, raw: bytes, sender: str, to: str) -> None:
    """Mail received after the import, processed as `serve` would."""
    from gateway.pipeline import Pipeline
    from storage import inbox

    with gw.database.transaction() as session:
        inbox.store(
            session, raw=raw, envelope_sender=sender, recipients=(to,), source="smtp", now=gw.now()
        )
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def test_imported_cases_fire_no_reminder_until_staff_touch_them(
    gw: Gateway, tmp_path: Path
) -> None:
    from gateway.reminder_jobs import Jobs
    from rules.tokens import reply_token
    from storage.models import Timer

    # The report, the reporter's reply and a staff note: the note is no touch (SPEC 9).
    import_path(gw, write_mbox(tmp_path / "past.mbox", past_correspondence()[:3]))
    with gw.database.transaction() as session:
        case = session.get(Case, 1)
        assert case is not None
        assert case.first_staff_mail_at is None
    jobs = Jobs(lambda: gw.settings, gw.database, gw.secrets)
    later = gw.now() + timedelta(days=30)
    assert jobs.tick(later) == 0
    with gw.database.transaction() as session:
        assert session.execute(select(func.count()).select_from(Timer)).scalar_one() == 0
    assert counts(gw)["OutboxEntry"] == 0

    # A staff member's note after the import touches the case: reminders resume.
    to = f"conduct+1-{reply_token(gw.secrets.current, 1, 'alice@example.org')}@example.org"
    note = mail("live-note@example.org", "alice@example.org", to, "Re: Report 0", gw.now())
    live(gw, note, "alice@example.org", to)
    assert jobs.tick(gw.now() + timedelta(days=8)) > 0


def test_an_imported_dsn_changes_no_live_outbox_row_and_sends_nothing(
    gw: Gateway, tmp_path: Path
) -> None:
    report = mail("live-1@example.net", "rita@example.net", "conduct@example.org", "Hi", START)
    live(gw, report, "rita@example.net", "conduct@example.org")
    with gw.database.transaction() as session:
        before = {
            r.id: (r.state, r.last_error) for r in session.execute(select(OutboxEntry)).scalars()
        }
        bounce_to = session.execute(
            select(OutboxEntry.envelope_sender).where(OutboxEntry.recipient == "alice@example.org")
        ).scalar_one()
    dsn = (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {bounce_to}\r\nSubject: Undelivered\r\n"
        "Message-ID: <old-dsn@mx>\r\nDate: Fri, 01 Mar 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        "Final-Recipient: rfc822; alice@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--B--\r\n"
    ).encode()
    assert import_path(gw, write_mbox(tmp_path / "dsn.mbox", [dsn])).startswith("1 messages")
    with gw.database.transaction() as session:
        after = {
            r.id: (r.state, r.last_error) for r in session.execute(select(OutboxEntry)).scalars()
        }
    assert after == before  # nothing marked failed, no bounce notice queued
