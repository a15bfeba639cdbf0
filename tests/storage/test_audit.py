"""The audit chain verifies, and names the first event edited, inserted or deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from rules.audit_chain import event_digest, event_link
from storage import audit
from storage.db import Database
from storage.models import AuditEvent

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def add_events(db: Database, count: int) -> None:
    with db.transaction() as session:
        for n in range(count):
            audit.append(
                session,
                at=NOW + timedelta(seconds=n),
                action="status",
                actor="alice@example.org",
                case=1,
                detail={"to": f"s{n}"},
            )


def test_an_untouched_chain_verifies_with_its_count_and_latest_link(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        report = audit.verify_chain(session)
        assert report.problem is None
        assert report.count == 5
        assert report.latest_link == audit.latest_link(session)


def test_an_edited_detail_is_named(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(detail="{}"))
    with db.transaction() as session:
        report = audit.verify_chain(session)
    assert report.problem == "event 3 was edited"


def test_an_edited_time_is_named(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(at=NOW - timedelta(days=1))
        )
    with db.transaction() as session:
        assert audit.verify_chain(session).bad_seq == 2


def test_a_deleted_event_is_named(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    with db.transaction() as session:
        assert audit.verify_chain(session).problem == "event 4 is deleted"


def test_a_deleted_last_event_is_named(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
    with db.transaction() as session:
        assert audit.verify_chain(session).problem == "event 5 is deleted"


def test_an_inserted_event_is_named(db: Database) -> None:
    add_events(db, 3)
    with db.transaction() as session:
        # A forger renumbers events 2 and 3 to make room and inserts a fake one as 2.
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(seq=4))
        session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(seq=3))
        fake = session.get(AuditEvent, 1)
        assert fake is not None
        session.add(
            AuditEvent(
                seq=2,
                at=NOW,
                case_number=1,
                actor="mallory",
                action="status",
                detail="{}",
                salt="00" * 16,
                digest=fake.digest,
                link=fake.link,
            )
        )
    with db.transaction() as session:
        assert audit.verify_chain(session).bad_seq == 2


def test_a_purged_case_still_verifies_without_people_or_details(db: Database) -> None:
    add_events(db, 4)
    with db.transaction() as session:
        audit.append(session, at=NOW, action="opened", actor="x@example.net", case=2)
        audit.purge_case(session, 1)
        audit.append(session, at=NOW, action="purged", actor=None, case=1)  # as purge does
    with db.transaction() as session:
        assert audit.verify_chain(session).problem is None
        assert all(e.actor is None and e.detail is None for e in audit.for_case(session, 1))
        assert audit.for_case(session, 2)[0].actor == "x@example.net"


def test_an_edit_that_also_blanks_the_salt_is_named(db: Database) -> None:
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == 3)
            .values(salt=None, actor="mallory@example.com", detail='{"to": "closed"}')
        )
    with db.transaction() as session:
        assert audit.verify_chain(session).problem == "event 3 was edited"


def test_a_blanked_event_of_a_case_that_was_never_purged_is_named(db: Database) -> None:
    """A NULL salt is only how a purge leaves an event; anywhere else it hides an edit."""
    add_events(db, 5)
    with db.transaction() as session:
        session.execute(
            update(AuditEvent).where(AuditEvent.seq == 2).values(salt=None, actor=None, detail=None)
        )
    with db.transaction() as session:
        assert audit.verify_chain(session).problem == "event 2 was edited"


def test_events_appended_past_the_counter_are_named_inserted(db: Database) -> None:
    """Rows added at the end with correctly computed links, bypassing the counter."""
    add_events(db, 3)
    with db.transaction() as session:
        previous = audit.latest_link(session)
        for seq in (4, 5):
            salt = "ab" * 16
            digest = event_digest(salt, "mallory@example.com", "{}")
            link = event_link(previous, seq, 1, NOW, "status", digest)
            session.add(
                AuditEvent(
                    seq=seq,
                    at=NOW,
                    case_number=1,
                    actor="mallory@example.com",
                    action="status",
                    detail="{}",
                    salt=salt,
                    digest=digest,
                    link=link,
                )
            )
            previous = link
    with db.transaction() as session:
        report = audit.verify_chain(session)
    assert report.problem == "event 4 is inserted"
    assert report.bad_seq == 4


def test_a_nul_in_an_event_is_stored_as_u_fffd_and_the_chain_still_verifies(db: Database) -> None:
    """PostgreSQL text cannot hold NUL: the digest covers the value the column holds."""
    with db.transaction() as session:
        audit.append(session, at=NOW, action="note", actor="a\x00b@example.org", detail="x\x00y")
        audit.append(session, at=NOW, action="note", actor=None, detail={"subject": "p\x00q"})
    with db.transaction() as session:
        first, second = session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()
        assert (first.actor, first.detail) == ("a\ufffdb@example.org", "x\ufffdy")
        assert "\x00" not in (second.detail or "")
        assert audit.verify_chain(session).problem is None
