"""One ingest pass in many batches, against a real Dovecot: nothing is moved before its
commit, and a failure at any batch loses nothing (SPEC section 2)."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError

from gateway import imap_ingest
from gateway.imap_client import ImapConnection, ImapConnectionLost, Listed, connect
from gateway.imap_mover import FolderChanged, Mover
from storage import inbox
from storage.models import AuditEvent, ImapSeen, OutboxEntry
from tests.dovecot import HOST, PrivateDovecot, private_dovecot
from tests.gateway.gateway_setup import Gateway
from tests.gateway.test_imap_watcher import count, imap_gateway, inbox_rows, report, session_rows

pytestmark = pytest.mark.dovecot

BATCH = 7
MESSAGES = 40  # six batches


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    with private_dovecot() as server:
        yield server


class Checked:
    """Counts each batch committed and refuses to move a UID whose ImapSeen row is missing."""

    def __init__(self, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gateway = gateway
        self.moved: list[int] = []
        self.movers: set[str] = set()  # the threads that moved
        self.fail_move = 0  # the move call number that fails; 0: none
        self.moves = 0
        self.commits = 0
        self.fail_commit = self.fail_fetch = 0  # the call number that fails; 0: none
        self.fetches = 0
        self.fetched_uids: list[list[int]] = []
        real_move, real_fetch = ImapConnection.move, ImapConnection.fetch
        real_commit = imap_ingest._Target.commit

        def move(connection: ImapConnection, uids: Any, folder: str) -> None:
            wanted = list(uids)
            assert self.committed(wanted) == set(wanted), "moved before its commit"
            self.moves += 1
            if self.moves == self.fail_move:
                raise ImapConnectionLost("injected during a move")
            real_move(connection, wanted, folder)
            self.moved += wanted
            self.movers.add(threading.current_thread().name)

        def fetch(connection: ImapConnection, uids: Any) -> dict[int, bytes]:
            uids = list(uids)
            self.fetched_uids.append(uids)
            self.fetches += 1
            if self.fetches == self.fail_fetch:
                raise ImapConnectionLost("injected during a fetch")
            return real_fetch(connection, uids)

        def commit(target: Any, found: list[tuple[int, bytes]]) -> imap_ingest.Committed:
            self.commits += 1
            if self.commits == self.fail_commit:
                raise RuntimeError("injected commit failure")
            return real_commit(target, found)

        monkeypatch.setattr(ImapConnection, "move", move)
        monkeypatch.setattr(ImapConnection, "fetch", fetch)
        monkeypatch.setattr(imap_ingest._Target, "commit", commit)
        monkeypatch.setattr(imap_ingest, "BATCH_MESSAGES", BATCH)

    def committed(self, uids: list[int]) -> set[int]:
        with self.gateway.database.transaction() as session:
            rows = session.execute(select(ImapSeen.uid).where(ImapSeen.uid.in_(uids)))
            return {int(uid) for uid in rows.scalars()}


def _backlog(server: PrivateDovecot) -> tuple[str, str]:
    user, tag = server.add_user(), uuid.uuid4().hex[:6]
    with server.client(user) as client:
        for n in range(MESSAGES):
            client.append("INBOX", report(tag, n))
    return user, tag


def _connect(server: PrivateDovecot, user: str) -> ImapConnection:
    return connect(HOST, server.port, "none", user, server.users[user], timeout=30)


def _pass(
    gateway: Gateway, server: PrivateDovecot, user: str, mover: bool = False
) -> imap_ingest.Pass:
    connection = _connect(server, user)
    second = functools.partial(_connect, server, user) if mover else None
    try:
        connection.ensure_folder("Processed")
        return imap_ingest.ingest_folder(
            connection,
            gateway.settings,
            gateway.database,
            gateway.now,
            lambda: None,
            lambda: None,
            second,
        )
    finally:
        connection.close()


def _states(gateway: Gateway) -> list[str]:
    with gateway.database.transaction() as session:
        return list(session.execute(select(ImapSeen.state).order_by(ImapSeen.uid)).scalars())


@pytest.mark.parametrize("mover", [False, True], ids=["one-connection", "mover"])
def test_a_backlog_in_many_batches_is_stored_in_uid_order_and_moved_after_each_commit(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    mover: bool,
) -> None:
    user, tag = _backlog(dovecot)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    done = _pass(gateway, dovecot, user, mover)
    assert (done.stored, done.duplicates, checked.commits) == (MESSAGES, 0, 6)
    assert checked.movers == {"imap-mover" if mover else "MainThread"}
    ids = [row.message_id for row in inbox_rows(gateway)]
    assert ids == [f"imap-{tag}-{n}@example.net" for n in range(MESSAGES)]
    assert sorted(checked.moved) == dovecot.uids(user, "Processed")
    assert len(checked.moved) == MESSAGES
    assert dovecot.uids(user, "INBOX") == []
    assert _states(gateway) == ["moved"] * MESSAGES


@pytest.mark.parametrize("mover", [False, True], ids=["one-connection", "mover"])
@pytest.mark.parametrize(
    ("fail_commit", "fail_fetch", "fail_move"),
    [(3, 0, 0), (0, 4, 0), (1, 0, 0), (0, 6, 0), (0, 0, 2), (0, 0, 6)],
)
def test_a_failure_at_any_batch_loses_nothing_and_the_next_pass_finishes(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    fail_commit: int,
    fail_fetch: int,
    fail_move: int,
    mover: bool,
) -> None:
    user, tag = _backlog(dovecot)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    checked.fail_commit, checked.fail_fetch = fail_commit, fail_fetch
    checked.fail_move = fail_move
    with pytest.raises((RuntimeError, ImapConnectionLost), match="injected"):
        _pass(gateway, dovecot, user, mover)
    assert len(checked.moved) < MESSAGES
    if not fail_move:
        assert len(inbox_rows(gateway)) < MESSAGES
    # Whatever was moved is recorded as moved; the rest stays "committed" or absent.
    assert _states(gateway).count("moved") == len(checked.moved)
    checked.fail_commit = checked.fail_fetch = checked.fail_move = 0
    again = _pass(gateway, dovecot, user, mover)
    assert again.duplicates == 0
    ids = sorted(row.message_id or "" for row in inbox_rows(gateway))
    assert ids == sorted(f"imap-{tag}-{n}@example.net" for n in range(MESSAGES))
    assert len(dovecot.uids(user, "Processed")) == MESSAGES
    assert dovecot.uids(user, "INBOX") == []
    assert _states(gateway) == ["moved"] * MESSAGES


def test_the_mover_moves_nothing_when_the_folder_changed_uidvalidity(
    dovecot: PrivateDovecot,
) -> None:
    user, _ = _backlog(dovecot)
    with dovecot.client(user) as client:
        client.create_folder("Processed")
    main = _connect(dovecot, user)
    try:
        selected = main.select("INBOX")
        # As if INBOX was recreated between this connection's SELECT and the mover's.
        mover = Mover(
            functools.partial(_connect, dovecot, user),
            "INBOX",
            selected.uidvalidity + 1,
            "Processed",
            lambda: None,
        )
        mover.put([1, 2, 3])
        with pytest.raises(FolderChanged):
            mover.finish()
        assert mover.moved == []
        assert len(dovecot.uids(user, "INBOX")) == MESSAGES
    finally:
        main.close()


def test_listing_gives_exact_size_and_flags_only_above_the_bound(
    dovecot: PrivateDovecot,
) -> None:
    user, tag = dovecot.add_user(), uuid.uuid4().hex[:6]
    larger = report(tag, 1, body=(b"y" * 78 + b"\r\n") * 400)  # about 32 KB
    with dovecot.client(user) as client:
        for raw in (report(tag, 0), larger, report(tag, 2)):
            client.append("INBOX", raw)
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        client.add_flags(uids, [b"$Marked"])
    connection = _connect(dovecot, user)
    try:
        connection.select("INBOX")
        listed = connection.listing(16384)
    finally:
        connection.close()
    assert [m.uid for m in listed] == uids
    assert listed[0] == Listed(uids[0], 16384, ())  # small: the bound, flags unread
    assert listed[1].size == len(larger) > 16384  # exact, and its flags read
    assert "$Marked" in listed[1].flags
    assert listed[2] == Listed(uids[2], 16384, ())


def test_a_fetch_formats_no_protocol_trace_even_with_its_logger_on_debug(
    dovecot: PrivateDovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """imapclient turns imaplib's trace on; the wrapper turns it off, so no report's text is
    formatted for a log (and the fetch does not pay for formatting it)."""
    user, tag = dovecot.add_user(), uuid.uuid4().hex[:6]
    secret = b"Only the conduct team may read this line."
    dovecot.append(user, report(tag, 0, body=secret + b"\r\n"))
    caplog.set_level(logging.DEBUG, logger="imapclient")
    connection = _connect(dovecot, user)
    try:
        connection.select("INBOX")
        fetched = connection.fetch([m.uid for m in connection.listing(16384)])
    finally:
        connection.close()
    assert [secret in raw for raw in fetched.values()] == [True]
    traced = [r.getMessage() for r in caplog.records if r.name.startswith("imapclient.imaplib")]
    assert not [line for line in traced if "conduct team" in line]


def test_a_refused_second_connection_moves_every_batch_on_the_first(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user, _ = _backlog(dovecot)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    connection = _connect(dovecot, user)
    # As a server allowing one connection per account: it refuses the second login.
    refused = functools.partial(connect, HOST, dovecot.port, "none", user, "not-it", timeout=30)
    try:
        connection.ensure_folder("Processed")
        with caplog.at_level(logging.WARNING, logger="conduct_gateway.imap"):
            done = imap_ingest.ingest_folder(
                connection,
                gateway.settings,
                gateway.database,
                gateway.now,
                lambda: None,
                lambda: None,
                refused,
            )
    finally:
        connection.close()
    assert (done.stored, checked.commits, checked.movers) == (MESSAGES, 6, {"MainThread"})
    assert dovecot.uids(user, "INBOX") == []
    assert _states(gateway) == ["moved"] * MESSAGES
    imap = [r.getMessage() for r in caplog.records if r.name == "conduct_gateway.imap"]
    assert imap == ["imap-mover-unavailable"]


def _folder_of(dovecot: PrivateDovecot, *messages: bytes) -> str:
    user = dovecot.add_user()
    with dovecot.client(user) as client:
        for raw in messages:
            client.append("INBOX", raw)
    return user


@pytest.mark.parametrize("mover", [False, True], ids=["one-connection", "mover"])
def test_a_message_with_values_postgresql_refuses_is_stored_and_moved_with_the_others(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    mover: bool,
) -> None:
    """A 330-character Return-Path (and a NUL in the Message-ID, which Dovecot turns into
    0x80) once failed the whole batch on PostgreSQL at every pass: nothing behind it was
    ever taken in. It is stored whole, without an envelope sender."""
    tag = uuid.uuid4().hex[:6]
    long_path = b"x" * 330 + b"@example.net"
    odd = report(tag, 3).replace(b"<rita@example.net>", b"<" + long_path + b">", 1)
    odd = odd.replace(b"@example.net>\r\n\r\n", b"\x00@example.net>\r\n\r\n")
    messages = [report(tag, n) for n in range(3)] + [odd] + [report(tag, n) for n in range(4, 9)]
    user = _folder_of(dovecot, *messages)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    Checked(gateway, monkeypatch)  # batches of 7: the odd one shares the first
    done = _pass(gateway, dovecot, user, mover)
    assert (done.stored, done.duplicates) == (9, 0)
    assert dovecot.uids(user, "INBOX") == []
    assert len(dovecot.uids(user, "Processed")) == 9
    rows = inbox_rows(gateway)
    assert [row.envelope_sender for row in rows] == ["rita@example.net"] * 3 + [None] + [
        "rita@example.net"
    ] * 5
    assert long_path in rows[3].raw
    assert _states(gateway) == ["moved"] * 9


@pytest.mark.parametrize("mover", [False, True], ids=["one-connection", "mover"])
def test_a_message_the_database_refuses_stays_in_the_folder_and_staff_are_told_once(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mover: bool,
) -> None:
    """A value nobody foresaw: the batch is committed one message at a time, the refused
    one is left in the folder, never moved uncommitted, and flagged. The operator (log)
    and staff (mail) are told once; later passes leave it alone and take in the rest."""
    tag = uuid.uuid4().hex[:6]
    refused = report(tag, 3, body=b"a value the database refuses\r\n")
    messages = (
        [report(tag, n) for n in range(3)] + [refused] + [report(tag, n) for n in range(4, 9)]
    )
    user = _folder_of(dovecot, *messages)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    real_store_many = inbox.store_many

    def store_many(session: Any, batch: list[inbox.Incoming], **options: Any) -> Any:
        if any(b"the database refuses" in message.raw for message in batch):
            raise DataError("INSERT INTO inbox", {}, Exception("injected: value refused"))
        return real_store_many(session, batch, **options)

    monkeypatch.setattr(inbox, "store_many", store_many)
    with caplog.at_level(logging.ERROR, logger="conduct_gateway.imap"):
        done = _pass(gateway, dovecot, user, mover)
    [left] = dovecot.uids(user, "INBOX")
    assert (done.stored, len(checked.moved), left not in checked.moved) == (8, 8, True)
    logged = [r for r in caplog.records if r.name == "conduct_gateway.imap"]
    assert [(r.getMessage(), getattr(r, "fields", {}).get("uid")) for r in logged] == [
        ("imap-store-refused", left)
    ]
    expected = [f"imap-{tag}-{n}@example.net" for n in range(9) if n != 3]
    assert [row.message_id for row in inbox_rows(gateway)] == expected
    assert sorted(_states(gateway)) == ["moved"] * 8 + ["refused"]
    assert [getattr(r, "fields", {}).get("staff_told") for r in logged] == [2]
    notices = [
        (row.recipient, row.raw)
        for row in session_rows(gateway, OutboxEntry)
        if row.kind == "notification"
    ]
    assert sorted(recipient for recipient, _ in notices) == ["alice@example.org", "bob@example.org"]
    assert all(b"could not be stored" in raw and b"$ConductRefused" in raw for _, raw in notices)
    assert all(f"imap-{tag}-3@example.net".encode() in raw for _, raw in notices)
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert b"$ConductRefused" in client.get_flags([left])[left]
    # New mail behind it keeps coming in; the refused one waits in the folder, and is
    # neither fetched nor reported again.
    dovecot.append(user, report(tag, 9))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="conduct_gateway.imap"):
        again = _pass(gateway, dovecot, user, mover)
    assert (again.stored, again.duplicates) == (1, 0)
    assert dovecot.uids(user, "INBOX") == [left]
    assert len(dovecot.uids(user, "Processed")) == 9
    assert [r for r in caplog.records if r.name == "conduct_gateway.imap"] == []
    assert left not in checked.fetched_uids[-1]
    assert len([r for r in session_rows(gateway, OutboxEntry) if r.kind == "notification"]) == 2
    assert count(gateway.database, AuditEvent, AuditEvent.action == "imap-store-refused") == 1
