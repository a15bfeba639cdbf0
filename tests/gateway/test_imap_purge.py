"""Retention's IMAP part: a purged case's originals leave processed_folder (real Dovecot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.pipeline import Pipeline
from gateway.scheduler import Scheduler
from rules.tokens import reply_token
from storage import inbox
from storage.models import Case, PendingOriginal
from tests.dovecot import PrivateDovecot, free_port, private_dovecot
from tests.gateway.gateway_setup import Gateway
from tests.gateway.test_imap_watcher import imap_gateway
from tests.gateway.test_retention_owed_mail import deliver
from tests.serve_process import cli

pytestmark = pytest.mark.dovecot

REPORT = (
    b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: A report\r\n"
    b"Message-ID: <purge-me@example.net>\r\n\r\nSomething happened.\r\n"
)
OTHER = REPORT.replace(b"purge-me", b"keep-me")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    with private_dovecot() as server:
        yield server


def closed_case_with_originals(
    tmp_path: Path, dovecot: PrivateDovecot, *, port: int | None = None
) -> tuple[Gateway, str]:
    """Case 1 closed no-violation (due at once), its mail sent; its original and another
    in Processed."""
    user = dovecot.add_user()
    gateway = imap_gateway(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", dovecot, user, port=port)
    dovecot.append(user, REPORT, "Processed")
    dovecot.append(user, OTHER, "Processed")
    store(gateway, REPORT, "rita@example.net", "conduct@example.org")
    token = reply_token(gateway.secrets.current, 1, "alice@example.org")
    close = (
        f"From: alice@example.org\r\nTo: conduct+1-{token}@example.org\r\nSubject: x\r\n"
        f"Message-ID: <close@example.org>\r\n\r\n#close no-violation\r\n"
    ).encode()
    store(gateway, close, "alice@example.org", f"conduct+1-{token}@example.org")
    deliver(gateway)  # a case still owing mail waits (test_retention_owed_mail.py)
    return gateway, user


def store(gateway: Gateway, raw: bytes, sender: str, to: str) -> None:
    with gateway.database.transaction() as session:
        inbox.store(
            session,
            raw=raw,
            envelope_sender=sender,
            recipients=(to,),
            source="imap",
            now=gateway.now(),
        )
    pipeline = Pipeline(lambda: gateway.settings, gateway.database, gateway.secrets, gateway.now)
    while pipeline.process_batch():
        pass


def pending(gateway: Gateway) -> list[str]:
    with gateway.database.transaction() as session:
        return list(session.execute(select(PendingOriginal.message_id)).scalars())


def test_cases_purge_deletes_the_case_s_originals_and_only_those(
    tmp_path: Path, dovecot: PrivateDovecot
) -> None:
    gateway, user = closed_case_with_originals(tmp_path, dovecot)
    done = cli(gateway.path, "cases", "purge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "purged 1 cases: 1",
        "deleted 1 originals from IMAP Processed",
    ]
    assert len(dovecot.uids(user, "Processed")) == 1  # keep-me stays
    assert pending(gateway) == []
    gateway.database.dispose()


def test_an_unreachable_server_keeps_originals_pending_until_a_later_run(
    tmp_path: Path, dovecot: PrivateDovecot
) -> None:
    gateway, user = closed_case_with_originals(tmp_path, dovecot, port=free_port())
    done = cli(gateway.path, "cases", "purge")
    assert done.returncode == 0, done.stderr
    # The report and the staff command that closed the case: received mail of the case.
    assert "2 originals are left for the next run" in done.stderr.decode()
    assert sorted(pending(gateway)) == ["close@example.org", "purge-me@example.net"]
    assert len(dovecot.uids(user, "Processed")) == 2
    # The server is back (here: the right port), and the next run deletes it.
    gateway.path.write_text(
        gateway.path.read_text().replace(
            f"port = {gateway.settings.imap.port}", f"port = {dovecot.port}"
        )
    )
    again = cli(gateway.path, "cases", "purge")
    assert again.returncode == 0, again.stderr
    assert "purged 0 cases" in again.stdout.decode()
    assert "deleted 1 originals" in again.stdout.decode()
    assert len(dovecot.uids(user, "Processed")) == 1
    assert pending(gateway) == []
    gateway.database.dispose()


def test_the_scheduler_s_retention_run_deletes_originals_at_leader_start(
    tmp_path: Path, dovecot: PrivateDovecot
) -> None:
    gateway, user = closed_case_with_originals(tmp_path, dovecot)

    async def scenario() -> None:
        scheduler = Scheduler(
            lambda: gateway.settings,
            gateway.database,
            gateway.secrets,
            lambda: datetime.now(UTC) + timedelta(seconds=1),
        )
        await scheduler.start()
        try:
            deadline = time.monotonic() + 30
            while len(dovecot.uids(user, "Processed")) != 1:
                assert time.monotonic() < deadline, "the original was not deleted"
                await asyncio.sleep(0.2)
        finally:
            await scheduler.stop()

    asyncio.run(scenario())
    with gateway.database.transaction() as session:
        row = session.get(Case, 1)
        assert row is not None
        assert row.purged_at is not None
    assert pending(gateway) == []
    gateway.database.dispose()
