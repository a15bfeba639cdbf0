"""The inbox: stored once per message, claimed by one worker, failures kept and retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from rules.message_keys import dedup_key
from storage import bulk, inbox
from storage.address_columns import ADDRESS_LENGTH
from storage.db import Database
from storage.models import InboxEntry
from tests.conftest import PostgresServer

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
        inbox.mark_failed(session, claimed[0], NOW, "ValueError: boom", NOW + timedelta(minutes=2))
    with db.transaction() as session:
        assert inbox.claim_due(session, NOW + timedelta(minutes=1), LEASE) == []
        again = inbox.claim_due(session, NOW + timedelta(minutes=2), LEASE)
        assert [m.id for m in again] == [stored.id]
        assert again[0].attempts == 1
        inbox.mark_done(session, again[0], NOW + timedelta(minutes=2))
    with db.transaction() as session:
        assert inbox.count_by_state(session) == {"done": 1}
        assert inbox.claim_due(session, NOW + timedelta(days=1), LEASE) == []


def _claimed(db: Database, at: datetime) -> inbox.InboxMessage:
    with db.transaction() as session:
        [entry] = inbox.claim_due(session, at, LEASE)
    return entry


def _state(db: Database, entry_id: int) -> tuple[str, int, str | None]:
    with db.transaction() as session:
        row = session.get(InboxEntry, entry_id)
        assert row is not None
        return row.state, row.attempts, row.last_error


def test_a_copy_claimed_before_the_claim_ran_out_and_was_retaken_changes_nothing(
    db: Database,
) -> None:
    with db.transaction() as session:
        stored = inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
    stale = _claimed(db, NOW)
    fresh = _claimed(db, NOW + LEASE)  # the first claim ran out: another worker's now
    later = NOW + LEASE + timedelta(minutes=1)
    with db.transaction() as session:
        assert not inbox.take(session, stale)
        assert not inbox.mark_failed(session, stale, later, "OSError: late", later)
        assert not inbox.mark_done(session, stale, later)
    assert _state(db, stored.id) == ("pending", 0, None)
    with db.transaction() as session:
        assert inbox.take(session, fresh)
        assert inbox.mark_done(session, fresh, later)
    assert _state(db, stored.id) == ("done", 0, None)


def test_a_done_row_is_never_reopened_nor_marked_again(db: Database) -> None:
    """Even by the copy that made it done: its COMMIT's answer may have been lost."""
    with db.transaction() as session:
        stored = inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
    entry = _claimed(db, NOW)
    with db.transaction() as session:
        assert inbox.mark_done(session, entry, NOW)
    with db.transaction() as session:
        assert not inbox.take(session, entry)
        assert not inbox.mark_failed(session, entry, NOW, "OSError: lost", NOW)
        assert not inbox.mark_done(session, entry, NOW + timedelta(hours=1))
        row = session.get(InboxEntry, stored.id)
        assert row is not None
        assert row.processed_at == NOW
    assert _state(db, stored.id) == ("done", 0, None)
    with db.transaction() as session:
        assert inbox.claim_due(session, NOW + timedelta(days=1), LEASE) == []


def test_a_failure_recorded_with_a_nul_in_its_text_is_kept(db: Database) -> None:
    with db.transaction() as session:
        stored = inbox.store(
            session, raw=REPORT, envelope_sender=None, recipients=[], source="smtp", now=NOW
        )
    entry = _claimed(db, NOW)
    with db.transaction() as session:
        assert inbox.mark_failed(session, entry, NOW, "ValueError: bad\x00header", NOW)
    state, attempts, error = _state(db, stored.id)
    assert (state, attempts) == ("failed", 1)
    assert error == "ValueError: bad\ufffdheader"  # as every text column stores NUL


@pytest.mark.parametrize(
    "sender",
    [
        "x" * 330 + "@example.net",
        "rita\x00@example.net",
        "rita@example.net\r\nX-Injected: 1",
        "rita\udcff@example.net",  # an undecodable byte, as surrogateescape keeps it
    ],
    ids=["longer-than-the-column", "nul", "line-break", "lone-surrogate"],
)
def test_an_envelope_sender_that_cannot_be_an_address_is_stored_as_none(
    db: Database, sender: str
) -> None:
    """PostgreSQL refused such a row, so intake answered 451 (IMAP and `ingest`: retried)
    forever; the message is kept whole instead, only without a usable envelope sender."""
    with db.transaction() as session:
        stored = inbox.store(
            session,
            raw=REPORT,
            envelope_sender=sender,
            recipients=["conduct@example.org"],
            source="smtp",
            now=NOW,
        )
    with db.transaction() as session:
        entry = inbox.get(session, stored.id)
    assert entry is not None
    assert (entry.envelope_sender, entry.raw, entry.message_id) == (None, REPORT, "r1@example.net")


def test_an_envelope_sender_of_the_column_s_full_length_is_kept(db: Database) -> None:
    longest = "x" * (ADDRESS_LENGTH - len("@example.net")) + "@example.net"
    senders = [longest, "rïta@exämple.net"]
    with db.transaction() as session:
        stored = [
            inbox.store(
                session,
                raw=REPORT.replace(b"r1@", b"r%d@" % n),
                envelope_sender=sender,
                recipients=["conduct@example.org"],
                source="smtp",
                now=NOW,
            )
            for n, sender in enumerate(senders)
        ]
    with db.transaction() as session:
        entries = [inbox.get(session, s.id) for s in stored]
    assert [e.envelope_sender for e in entries if e is not None] == senders


@pytest.mark.parametrize(
    ("field", "column"),
    [
        (b"Message-ID: <a\x00b@example.net>", "a\ufffdb@example.net"),
        (b"Message-ID: junk\x00id", "junk\ufffdid"),
    ],
    ids=["bracketed", "unbracketed"],
)
def test_a_nul_in_the_message_id_is_replaced_in_the_column_but_not_in_the_key(
    db: Database, field: bytes, column: str
) -> None:
    raw = field + b"\r\nSubject: hi\r\n\r\nbody\r\n"
    key = dedup_key(raw)
    with db.transaction() as session:
        stored = inbox.store(
            session,
            raw=raw,
            envelope_sender="s@example.net",
            recipients=["conduct@example.org"],
            source="smtp",
            now=NOW,
        )
        again = inbox.store(
            session, raw=raw, envelope_sender=None, recipients=[], source="imap", now=NOW
        )
    assert again.duplicate
    assert again.id == stored.id
    with db.transaction() as session:
        row = session.get(InboxEntry, stored.id)
        assert row is not None
        assert (row.dedup_key, row.raw) == (key, raw)
        assert row.message_id == column


def _report(n: int, body: bytes = b"Something happened.\r\n") -> bytes:
    return (
        b"From: reporter@example.net\r\nTo: conduct@example.org\r\n"
        b"Message-ID: <r%d@example.net>\r\nSubject: report\r\n\r\n" % n
    ) + body


def _incoming(raw: bytes, *recipients: str) -> inbox.Incoming:
    return inbox.incoming(raw, "reporter@example.net", recipients or ("conduct@example.org",))


def _table(db: Database) -> list[tuple[str, str | None, str, bytes, str]]:
    with db.transaction() as session:
        rows = session.execute(select(InboxEntry).order_by(InboxEntry.id)).scalars()
        return [(r.dedup_key, r.message_id, r.envelope_recipients, r.raw, r.source) for r in rows]


def test_a_batch_is_stored_in_order_with_each_envelope(db: Database) -> None:
    batch = [_incoming(_report(n), f"conduct+{n}@example.org") for n in range(3)]
    with db.transaction() as session:
        stored = inbox.store_many(session, batch, source="imap", now=NOW)
    assert [s.duplicate for s in stored] == [False, False, False]
    assert [s.id for s in stored] == sorted(s.id for s in stored)
    with db.transaction() as session:
        entries = [inbox.get(session, s.id) for s in stored]
    assert [(e.raw, e.envelope_recipients, e.source) for e in entries if e is not None] == [
        (_report(n), (f"conduct+{n}@example.org",), "imap") for n in range(3)
    ]
    assert all(e is not None and e.envelope_sender == "reporter@example.net" for e in entries)


def test_a_batch_merges_recipients_into_a_pending_copy_only(db: Database) -> None:
    with db.transaction() as session:
        pending = inbox.store(
            session,
            raw=_report(1),
            envelope_sender=None,
            recipients=["a@x.org"],
            source="smtp",
            now=NOW,
        )
        done = inbox.store(
            session,
            raw=_report(2),
            envelope_sender=None,
            recipients=["a@x.org"],
            source="smtp",
            now=NOW,
        )
        entry = inbox.get(session, done.id)
        assert entry is not None
        inbox.mark_done(session, entry, NOW)
    batch = [
        _incoming(_report(1), "b@x.org"),
        _incoming(_report(3)),
        _incoming(_report(2), "b@x.org"),
    ]
    with db.transaction() as session:
        stored = inbox.store_many(session, batch, source="imap", now=NOW)
    assert [(s.id, s.duplicate) for s in stored] == [
        (pending.id, True),
        (stored[1].id, False),
        (done.id, True),
    ]
    with db.transaction() as session:
        first, second = inbox.get(session, pending.id), inbox.get(session, done.id)
    assert first is not None
    assert first.envelope_recipients == ("a@x.org", "b@x.org")
    assert second is not None
    assert second.envelope_recipients == ("a@x.org",)


def test_a_message_twice_in_one_batch_is_one_entry_with_both_recipients(db: Database) -> None:
    bare = b"From: a@example.net\r\nSubject: x\r\n\r\nno message-id\r\n"
    batch = [
        _incoming(_report(1), "conduct@example.org"),
        _incoming(bare, "conduct@example.org"),
        _incoming(_report(1), "conduct+7@example.org", "conduct@example.org"),
        _incoming(bare, "conduct+director@example.org"),
    ]
    with db.transaction() as session:
        stored = inbox.store_many(session, batch, source="imap", now=NOW)
        assert inbox.count_by_state(session) == {"pending": 2}
    assert [s.duplicate for s in stored] == [False, False, True, True]
    assert (stored[2].id, stored[3].id) == (stored[0].id, stored[1].id)
    with db.transaction() as session:
        report, other = inbox.get(session, stored[0].id), inbox.get(session, stored[1].id)
    assert report is not None
    assert report.envelope_recipients == ("conduct@example.org", "conduct+7@example.org")
    assert other is not None
    assert other.envelope_recipients == ("conduct@example.org", "conduct+director@example.org")


def test_a_batch_leaves_the_same_rows_as_one_store_at_a_time(db: Database) -> None:
    """Same table either way, on a mix of new messages, copies and a changed body."""
    mixed = [
        _incoming(_report(1)),
        _incoming(_report(2), "conduct+4@example.org"),
        _incoming(_report(1), "conduct+9@example.org"),
        _incoming(_report(2, b"Another body.\r\n")),
        _incoming(b"Subject: none\r\n\r\nbody\r\n"),
        _incoming(_report(2), "conduct@example.org"),
    ]
    with db.transaction() as session:
        singly = [
            inbox.store(
                session,
                raw=m.raw,
                envelope_sender=m.envelope_sender,
                recipients=m.recipients,
                source="ingest",
                now=NOW,
            )
            for m in mixed
        ]
    expected = _table(db)
    with db.transaction() as session:
        session.execute(delete(InboxEntry))
    with db.transaction() as session:
        batched = inbox.store_many(session, mixed, source="ingest", now=NOW)
    assert [s.duplicate for s in batched] == [s.duplicate for s in singly]
    assert _table(db) == expected
    assert len(expected) == 4


def test_an_empty_batch_stores_nothing_and_an_unknown_source_is_refused(db: Database) -> None:
    with db.transaction() as session:
        assert inbox.store_many(session, [], source="imap", now=NOW) == []
        with pytest.raises(ValueError, match="unknown inbox source"):
            inbox.store_many(session, [_incoming(REPORT)], source="carrier-pigeon", now=NOW)
        assert inbox.count_by_state(session) == {}


def test_a_batch_is_due_at_the_moment_it_was_stored_and_not_before(db: Database) -> None:
    """The batch insert formats its times as every other query does (SQLite keeps text)."""
    with db.transaction() as session:
        stored = inbox.store_many(session, [_incoming(_report(1))], source="imap", now=NOW)
        assert inbox.claim_due(session, NOW - timedelta(microseconds=1), LEASE) == []
        [claimed] = inbox.claim_due(session, NOW, LEASE)
    assert (claimed.id, claimed.received_at, claimed.attempts) == (stored[0].id, NOW, 0)


@pytest.mark.postgres
def test_a_key_another_instance_stores_meanwhile_is_a_duplicate(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: another instance commits one of the batch's messages just before the
    batch's insert. That one is a duplicate with the other's id; the rest are new."""
    db = Database(postgres.migrated())
    other = Database(db.url)
    real_insert = bulk.insert_returning
    raced: list[int] = []
    racing: list[bool] = []

    def race_then_insert(*args: Any, **options: Any) -> list[tuple[Any, ...]]:
        if racing:  # the other instance's own insert
            return real_insert(*args, **options)
        racing.append(True)
        with other.transaction() as elsewhere:
            raced.append(
                inbox.store(
                    elsewhere,
                    raw=_report(2),
                    envelope_sender=None,
                    recipients=["conduct+other@example.org"],
                    source="smtp",
                    now=NOW,
                ).id
            )
        return real_insert(*args, **options)

    try:
        with db.transaction() as session:
            batch = [_incoming(_report(n)) for n in (1, 2, 3)]
            monkeypatch.setattr(bulk, "insert_returning", race_then_insert)
            stored = inbox.store_many(session, batch, source="imap", now=NOW)
            monkeypatch.undo()
        assert [s.duplicate for s in stored] == [False, True, False]
        assert stored[1].id == raced[0]
        with db.transaction() as session:
            merged = inbox.get(session, raced[0])
            assert inbox.count_by_state(session) == {inbox.PENDING: 3}
        assert merged is not None
        assert merged.envelope_recipients == ("conduct+other@example.org", "conduct@example.org")
    finally:
        db.dispose()
        other.dispose()
