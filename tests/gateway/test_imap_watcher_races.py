"""The IMAP watcher's timing edges against a real Dovecot (SPEC section 2; issue 6): mail
arriving during a pass, a large message under the limit. (A server gone silent in IDLE:
test_imap_watcher.py.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.imap_client import ImapConnection
from gateway.pipeline import Pipeline
from storage.models import Case, InboxEntry
from tests.dovecot import PrivateDovecot
from tests.gateway.test_imap_watcher import (
    IDLE_BOUND,
    Running,
    count,
    dovecot,
    events,
    imap_gateway,
    inbox_rows,
    report,
    run,
    wait_until,
)

pytestmark = pytest.mark.dovecot
__all__ = ["dovecot", "events", "run"]  # fixtures, shared with test_imap_watcher


def test_mail_appended_during_a_pass_is_stored_without_waiting_for_idle(
    tmp_path: Path,
    dovecot: PrivateDovecot,
    run: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = dovecot.add_user()
    tag = uuid.uuid4().hex[:6]
    backlog = 3
    for n in range(backlog):
        dovecot.append(user, report(tag, n))
    real_fetch = ImapConnection.fetch
    appended: list[float] = []

    def fetch_then_append(self: ImapConnection, uids: Any) -> dict[int, bytes]:
        found = real_fetch(self, uids)
        if not appended:
            # New mail while the pass is running: not in its listing, and the server
            # announces it in its answer to the pass's MOVE, which IDLE never sees.
            dovecot.append(user, report(tag, 10_000))
            appended.append(time.monotonic())
        return found

    monkeypatch.setattr(ImapConnection, "fetch", fetch_then_append)
    gateway = imap_gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", dovecot, user)
    run(gateway)  # production IDLE renewal: 10 minutes
    wait_until(lambda: bool(appended), 30, "the pass fetched")
    wait_until(
        lambda: count(gateway.database, InboxEntry) == backlog + 1,
        IDLE_BOUND,
        "the message appended during the pass",
    )


def test_a_20_mb_message_under_the_default_limit_becomes_a_case(
    tmp_path: Path, dovecot: PrivateDovecot, run: Callable[..., Running]
) -> None:
    user = dovecot.add_user()
    tag = uuid.uuid4().hex[:6]
    big = report(tag, 1, body=(b"x" * 998 + b"\r\n") * 20_000)  # about 20 MB, under 25M
    assert 19 * 1024 * 1024 < len(big) < 25 * 1024 * 1024
    dovecot.append(user, big)
    gateway = imap_gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", dovecot, user)
    assert gateway.settings.smtp.max_message_size == 25 * 1024 * 1024
    run(gateway)
    wait_until(lambda: len(inbox_rows(gateway)) == 1, 60, "stored")
    pipeline = Pipeline(lambda: gateway.settings, gateway.database, gateway.secrets, gateway.now)
    while pipeline.process_batch():
        pass
    with gateway.database.transaction() as session:
        [case] = session.execute(select(Case)).scalars().all()
        [row] = session.execute(select(InboxEntry)).scalars().all()
    assert case.subject == "Report 1"
    assert len(row.raw) == len(big)
    assert not dovecot.uids(user, "INBOX")
