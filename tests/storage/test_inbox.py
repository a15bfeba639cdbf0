"""The inbox: stored once per message, claimed by one worker, failures kept and retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import inbox
from storage.db import Database

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
REPORT = (
    b"From: reporter@example.net\r\nTo: conduct@example.org\r\n"
    b"Message-ID: <r1@example.net>\r\nSubject: report\r\n\r\nSomething happened.\r\n"
)


def test_a_stored_message_is_pending_and_keeps_its_bytes(db: Database) -> None:
    with db.transaction() as session:
        stored = inbox.store(
            session,
            raw=REPORT,
            envelope_sender="reporter@example.net",
            recipients=["conduct@example.org"],
            source="smtp",
            now=NOW,
        )
    assert not stored.duplicate
    with db.transaction() as session:
        entry = inbox.get(session, stored.id)
    assert entry is not None
    assert entry.raw == REPORT
    assert entry.message_id == "r1@example.net"
    assert entry.envelope_recipients == ("conduct@example.org",)
    assert entry.received_at == NOW


def test_the_same_message_by_another_path_is_one_entry(db: Database) -> None:
    relayed = b"Received: from imap.example.net\r\nReturn-Path: <reporter@example.net>\r\n" + REPORT
    with db.transaction() as session:
        first = inbox.store(
            session,
            raw=REPORT,
            envelope_sender=None,
            recipients=["conduct@example.org"],
            source="smtp",
            now=NOW,
        )
    with db.transaction() as session:
        second = inbox.store(
            session,
            raw=relayed,
            envelope_sender=None,
            recipients=["conduct+7@example.org"],
            source="imap",
            now=NOW,
        )
    assert second.duplicate
    assert second.id == first.id
    with db.transaction() as session:
        entry = inbox.get(session, first.id)
        assert entry is not None
        assert entry.envelope_recipients == ("conduct@example.org", "conduct+7@example.org")
        assert inbox.count_by_state(session) == {"pending": 1}


def test_a_changed_body_with_the_same_message_id_is_a_new_entry(db: Database) -> None:
    other = REPORT.replace(b"Something happened.", b"Something else happened.")
    with db.transaction() as session:
        a = inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
        b = inbox.store(
            session, raw=other, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
    assert a.id != b.id


def test_without_message_id_the_whole_message_is_the_key(db: Database) -> None:
    raw = b"From: a@example.net\r\nSubject: x\r\n\r\nbody\r\n"
    with db.transaction() as session:
        a = inbox.store(
            session, raw=raw, envelope_sender=None, recipients=[], source="ingest", now=NOW
        )
        b = inbox.store(
            session, raw=raw, envelope_sender=None, recipients=[], source="ingest", now=NOW
        )
        c = inbox.store(
            session,
            raw=b"X-Extra: 1\r\n" + raw,
            envelope_sender=None,
            recipients=[],
            source="ingest",
            now=NOW,
        )
    assert b.duplicate
    assert b.id == a.id
    assert not c.duplicate


def test_a_claimed_entry_is_not_claimed_again_until_its_lease_ends(db: Database) -> None:
    with db.transaction() as session:
        inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
    with db.transaction() as session:
        assert len(inbox.claim_due(session, NOW, LEASE)) == 1
    with db.transaction() as session:
        assert inbox.claim_due(session, NOW + timedelta(minutes=1), LEASE) == []
    with db.transaction() as session:
        assert len(inbox.claim_due(session, NOW + LEASE, LEASE)) == 1


def test_a_failed_entry_is_kept_and_retried_after_its_back_off(db: Database) -> None:
    with db.transaction() as session:
        stored = inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
        claimed = inbox.claim_due(session, NOW, LEASE)
        inbox.mark_failed(
            session, claimed[0].id, NOW, "ValueError: boom", NOW + timedelta(minutes=2)
        )
    with db.transaction() as session:
        assert inbox.claim_due(session, NOW + timedelta(minutes=1), LEASE) == []
        again = inbox.claim_due(session, NOW + timedelta(minutes=2), LEASE)
        assert [m.id for m in again] == [stored.id]
        assert again[0].attempts == 1
        inbox.mark_done(session, stored.id, NOW + timedelta(minutes=2))
    with db.transaction() as session:
        assert inbox.count_by_state(session) == {"done": 1}
        assert inbox.claim_due(session, NOW + timedelta(days=1), LEASE) == []
