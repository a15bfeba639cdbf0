"""A purged case keeps no personal data anywhere (SPEC section 7a), and the chain verifies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.retention_job import run_retention
from storage import audit
from storage.models import (
    BanRow,
    HeldPost,
    InboxEntry,
    Message,
    PendingOriginal,
    Sanction,
    Timer,
)
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_commands import REPORT, command, run, store
from tests.gateway.test_retention_owed_mail import deliver


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    store(gateway, REPORT, "rita@example.net", ("conduct@example.org",))
    run(gateway)
    yield gateway
    gateway.database.dispose()


def test_purge_clears_notes_ended_bans_message_ids_and_held_posts(gw: Gateway) -> None:
    command(
        gw,
        "#accused mallory@example.com\r\n#sanction no-contact for=90d note\r\n"
        '#ban mallory@example.com reason="shouted at Rita"\r\n'
        '#ban trent@example.com for=30d reason="helped Mallory"\r\n'
        "#remind 30d ask Rita how she is\r\n",
    )
    command(gw, "#unban mallory@example.com\r\n")
    with gw.database.transaction() as session:
        session.add(
            HeldPost(
                list="dev@lists.example.org",
                sender="trent@example.com",
                subject="Rita again",
                reason="banned",
                case_number=1,
                envelope_sender="trent@example.com",
                envelope_recipients='["dev@lists.example.org"]',
                raw=b"Subject: Rita again\r\n\r\nbody\r\n",
                state="held",
                held_at=gw.now(),
            )
        )
        session.execute(select(Sanction)).scalar_one().note = "Rita asked for no contact"
    command(gw, "#close no-violation\r\n")
    deliver(gw)  # a case still owing mail waits (test_retention_owed_mail.py)
    assert run_retention(gw.settings, gw.database, gw.now() + timedelta(seconds=1)) == [1]
    with gw.database.transaction() as session:
        assert all(s.note is None for s in session.execute(select(Sanction)).scalars())
        timers = session.execute(select(Timer)).scalars().all()
        assert timers
        assert all(t.note is None and t.recipient is None for t in timers)
        assert all(t.cancelled_at is not None or t.fired_at is not None for t in timers)
        by_state = {b.lifted_at is None: b for b in session.execute(select(BanRow)).scalars()}
        # The lifted ban keeps no pattern; the one still in force is still enforced.
        assert by_state[False].pattern == "(purged)"
        assert by_state[True].pattern == "trent@example.com"
        assert all(b.reason is None for b in by_state.values())
        assert all(m.message_id is None for m in session.execute(select(Message)).scalars())
        assert all(
            i.message_id is None and i.raw == b""
            for i in session.execute(select(InboxEntry)).scalars()
            if i.source == "smtp"
        )
        [held] = session.execute(select(HeldPost)).scalars().all()
        assert held.state == "discarded"
        assert (held.raw, held.sender, held.subject, held.envelope_sender) == (None,) * 4
        # IMAP is off: nothing is kept for it.
        assert session.execute(select(PendingOriginal)).scalars().all() == []
        assert audit.verify_chain(session).problem is None
