"""Retention's IMAP part: a purged case's originals leave processed_folder (real Dovecot)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.imap_purge import delete_originals
from gateway.pipeline import Pipeline
from gateway.scheduler import run_retention
from rules.tokens import reply_token
from storage import inbox
from tests.dovecot import PrivateDovecot, private_dovecot
from tests.gateway.test_imap_watcher import imap_gateway

REPORT = (
    b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: A report\r\n"
    b"Message-ID: <purge-me@example.net>\r\n\r\nSomething happened.\r\n"
)
OTHER = REPORT.replace(b"purge-me", b"keep-me")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    with private_dovecot() as server:
        yield server


def test_purge_deletes_the_case_s_originals_and_only_those(
    tmp_path: Path,
    dovecot: PrivateDovecot,
) -> None:
    user = dovecot.add_user()
    gateway = imap_gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", dovecot, user)
    dovecot.append(user, REPORT, "Processed")
    dovecot.append(user, OTHER, "Processed")
    with gateway.database.transaction() as session:
        inbox.store(
            session,
            raw=REPORT,
            envelope_sender="rita@example.net",
            recipients=("conduct@example.org",),
            source="imap",
            now=gateway.now(),
        )
    pipeline = Pipeline(lambda: gateway.settings, gateway.database, gateway.secrets, gateway.now)
    while pipeline.process_batch():
        pass
    token = reply_token(gateway.secrets.current, 1, "alice@example.org")
    close = (
        f"From: alice@example.org\r\nTo: conduct+1-{token}@example.org\r\nSubject: x\r\n"
        f"Message-ID: <close@example.org>\r\n\r\n#close no-violation\r\n"
    ).encode()
    with gateway.database.transaction() as session:
        inbox.store(
            session,
            raw=close,
            envelope_sender="alice@example.org",
            recipients=(f"conduct+1-{token}@example.org",),
            source="smtp",
            now=gateway.now(),
        )
    while pipeline.process_batch():
        pass
    originals = run_retention(gateway.database, gateway.now() + timedelta(seconds=1))
    assert "purge-me@example.net" in originals
    assert delete_originals(gateway.settings, originals) == 1
    assert len(dovecot.uids(user, "Processed")) == 1  # keep-me stays
    gateway.database.dispose()


def test_purge_with_the_server_down_logs_and_returns(
    tmp_path: Path, dovecot: PrivateDovecot
) -> None:
    user = dovecot.add_user()
    gateway = imap_gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", dovecot, user, port=1)
    assert delete_originals(gateway.settings, ["x@example.net"]) == 0
    gateway.database.dispose()
