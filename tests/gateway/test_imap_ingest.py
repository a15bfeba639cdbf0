"""One ingest pass in many batches, against a real Dovecot: nothing is moved before its
commit, and a failure at any batch loses nothing (SPEC section 2)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway import imap_ingest
from gateway.imap_client import ImapConnection, ImapConnectionLost, connect
from storage.models import ImapSeen
from tests.dovecot import HOST, PrivateDovecot, private_dovecot
from tests.gateway.gateway_setup import Gateway
from tests.gateway.test_imap_watcher import imap_gateway, inbox_rows, report

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
        self.commits = 0
        self.fail_commit = self.fail_fetch = 0  # the call number that fails; 0: none
        self.fetches = 0
        real_move, real_fetch = ImapConnection.move, ImapConnection.fetch
        real_commit = imap_ingest._Target.commit

        def move(connection: ImapConnection, uids: Any, folder: str) -> None:
            wanted = list(uids)
            assert self.committed(wanted) == set(wanted), "moved before its commit"
            real_move(connection, wanted, folder)
            self.moved += wanted

        def fetch(connection: ImapConnection, uids: Any) -> dict[int, bytes]:
            self.fetches += 1
            if self.fetches == self.fail_fetch:
                raise ImapConnectionLost("injected during a fetch")
            return real_fetch(connection, uids)

        def commit(target: Any, found: list[tuple[int, bytes]]) -> tuple[int, int]:
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


def _pass(gateway: Gateway, server: PrivateDovecot, user: str) -> imap_ingest.Pass:
    connection = connect(HOST, server.port, "none", user, server.users[user], timeout=30)
    try:
        connection.ensure_folder("Processed")
        return imap_ingest.ingest_folder(
            connection, gateway.settings, gateway.database, gateway.now, lambda: None, lambda: None
        )
    finally:
        connection.close()


def _states(gateway: Gateway) -> list[str]:
    with gateway.database.transaction() as session:
        return list(session.execute(select(ImapSeen.state).order_by(ImapSeen.uid)).scalars())


def test_a_backlog_in_many_batches_is_stored_in_uid_order_and_moved_after_each_commit(
    tmp_path: Path, database_url: str, dovecot: PrivateDovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, tag = _backlog(dovecot)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    done = _pass(gateway, dovecot, user)
    assert (done.stored, done.duplicates, checked.commits) == (MESSAGES, 0, 6)
    ids = [row.message_id for row in inbox_rows(gateway)]
    assert ids == [f"imap-{tag}-{n}@example.net" for n in range(MESSAGES)]
    assert sorted(checked.moved) == dovecot.uids(user, "Processed")
    assert len(checked.moved) == MESSAGES
    assert dovecot.uids(user, "INBOX") == []
    assert _states(gateway) == ["moved"] * MESSAGES


@pytest.mark.parametrize(("fail_commit", "fail_fetch"), [(3, 0), (0, 4), (1, 0), (0, 6)])
def test_a_failure_at_any_batch_loses_nothing_and_the_next_pass_finishes(
    tmp_path: Path,
    database_url: str,
    dovecot: PrivateDovecot,
    monkeypatch: pytest.MonkeyPatch,
    fail_commit: int,
    fail_fetch: int,
) -> None:
    user, tag = _backlog(dovecot)
    gateway = imap_gateway(tmp_path, database_url, dovecot, user)
    checked = Checked(gateway, monkeypatch)
    checked.fail_commit, checked.fail_fetch = fail_commit, fail_fetch
    with pytest.raises((RuntimeError, ImapConnectionLost), match="injected"):
        _pass(gateway, dovecot, user)
    assert len(checked.moved) < MESSAGES
    assert len(inbox_rows(gateway)) < MESSAGES
    checked.fail_commit = checked.fail_fetch = 0
    again = _pass(gateway, dovecot, user)
    assert again.duplicates == 0
    ids = sorted(row.message_id or "" for row in inbox_rows(gateway))
    assert ids == sorted(f"imap-{tag}-{n}@example.net" for n in range(MESSAGES))
    assert len(dovecot.uids(user, "Processed")) == MESSAGES
    assert dovecot.uids(user, "INBOX") == []
    assert _states(gateway) == ["moved"] * MESSAGES
