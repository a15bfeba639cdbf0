"""Held posts and the relayed-post index on each backend: hold, release, discard, expire, prune."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from storage import held, outbox, relayed
from storage.db import Database
from storage.models import AuditEvent, HeldPost, OutboxEntry

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DEV = "dev@lists.example.org"
RAW = b"Message-ID: <post1@example.net>\r\nFrom: m@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def hold(db: Database, *, at: datetime = NOW, raw: bytes = RAW) -> int:
    with db.transaction() as session:
        return held.hold(
            session,
            list_address="Dev@Lists.Example.org",
            sender="m@example.net",
            subject="hi",
            reason="ban 3 (From)",
            ban_id=3,
            case=None,
            envelope_sender="bounce-m@example.net",
            envelope_recipients=[DEV],
            raw=raw,
            now=at,
        )


def actions(db: Database) -> list[str]:
    with db.transaction() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def test_a_held_post_is_listed_with_its_details_and_audited(db: Database) -> None:
    held_id = hold(db)
    with db.transaction() as session:
        [record] = held.list_held(session)
    assert record.id == held_id
    assert record.list == DEV
    assert record.sender == "m@example.net"
    assert record.subject == "hi"
    assert record.reason == "ban 3 (From)"
    assert record.held_at == NOW
    assert record.envelope_recipients == (DEV,)
    assert record.state == held.HELD
    assert actions(db) == ["post-held"]


def test_release_owes_the_raw_post_to_the_list_server_once(db: Database) -> None:
    held_id = hold(db)
    with db.transaction() as session:
        record = held.release(session, held_id, "carol@example.org", NOW)
    assert record is not None
    assert record.state == held.RELEASED
    assert record.decided_by == "carol@example.org"
    with db.transaction() as session:
        row = session.execute(select(OutboxEntry)).scalar_one()
        assert row.route == "upstream"
        assert row.recipient == DEV
        assert row.envelope_sender == "bounce-m@example.net"
        assert row.raw == RAW
        assert row.message_id == held.release_key(held_id)
        assert row.message_id != "post1@example.net"
        assert held.list_held(session) == []
        assert held.release(session, held_id, "carol@example.org", NOW) is None
        assert held.discard(session, held_id, "carol@example.org", NOW) is None
        [due] = outbox.claim_due(session, NOW, timedelta(minutes=1))
        assert due.route == "upstream"
    assert actions(db) == ["post-held", "post-released"]


def test_the_same_post_held_for_two_lists_is_released_to_each(db: Database) -> None:
    first, second = hold(db), hold(db)
    with db.transaction() as session:
        assert held.release(session, first, "cli", NOW) is not None
        assert held.release(session, second, "cli", NOW) is not None
    with db.transaction() as session:
        assert len(session.execute(select(OutboxEntry.id)).all()) == 2


def test_discard_drops_the_bytes_and_sends_nothing(db: Database) -> None:
    held_id = hold(db)
    with db.transaction() as session:
        record = held.discard(session, held_id, "cli", NOW)
    assert record is not None
    assert record.state == held.DISCARDED
    with db.transaction() as session:
        assert session.execute(select(HeldPost.raw)).scalar_one() is None
        assert session.execute(select(OutboxEntry.id)).first() is None
        got = held.get(session, held_id)
        assert got is not None
        assert got.state == held.DISCARDED
        assert held.get(session, held_id + 100) is None
    assert actions(db) == ["post-held", "post-discarded"]


def test_expire_discards_only_posts_held_before_the_cut(db: Database) -> None:
    old = hold(db, at=NOW - timedelta(days=15))
    recent = hold(db, at=NOW - timedelta(days=13))
    with db.transaction() as session:
        assert held.expire(session, NOW - timedelta(days=14), NOW) == 1
    with db.transaction() as session:
        assert [r.id for r in held.list_held(session)] == [recent]
        expired = held.get(session, old)
        assert expired is not None
        assert expired.state == held.EXPIRED
        assert session.execute(select(HeldPost.raw).where(HeldPost.id == old)).scalar() is None
        assert held.expire(session, NOW - timedelta(days=14), NOW) == 0
    assert actions(db) == ["post-held", "post-held", "post-expired"]


def test_relayed_posts_give_the_senders_of_known_message_ids(db: Database) -> None:
    with db.transaction() as session:
        relayed.record_many(
            session,
            [
                relayed.Relayed("a@example.net", "reporter@example.net", DEV, NOW),
                ("b@example.net", "target@example.net", DEV, NOW - timedelta(days=100)),
            ],
        )
        relayed.record_many(session, [])
    with db.transaction() as session:
        ids = ["a@example.net", "b@example.net", "missing@example.net"]
        ids += [f"filler{i}@example.net" for i in range(1200)]
        assert relayed.senders_of(session, ids) == {
            "a@example.net": "reporter@example.net",
            "b@example.net": "target@example.net",
        }
        assert relayed.prune(session, NOW - relayed.RETENTION) == 1
    with db.transaction() as session:
        assert relayed.senders_of(session, ["a@example.net", "b@example.net"]) == {
            "a@example.net": "reporter@example.net"
        }


def test_release_owes_one_copy_to_each_address_the_post_was_sent_to(db: Database) -> None:
    recipients = ["dev-request@lists.example.org", "dev+tag@lists.example.org"]
    with db.transaction() as session:
        held_id = held.hold(
            session,
            list_address=DEV,
            sender="m@example.net",
            subject="hi",
            reason="ban 3",
            ban_id=3,
            case=None,
            envelope_sender="m@example.net",
            envelope_recipients=recipients,
            raw=RAW,
            now=NOW,
        )
        held.release(session, held_id, "cli", NOW)
    with db.transaction() as session:
        rows = session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars().all()
        assert [row.recipient for row in rows] == recipients
        assert [row.message_id for row in rows] == [
            held.release_key(held_id),
            held.release_key(held_id, 1),
        ]


def test_a_message_held_before_is_found_by_list_and_key_whatever_its_state(db: Database) -> None:
    with db.transaction() as session:
        held_id = held.hold(
            session,
            list_address="DEV@Lists.Example.org",
            sender=None,
            subject=None,
            reason="ban 3",
            ban_id=3,
            case=None,
            envelope_sender=None,
            envelope_recipients=[DEV],
            raw=RAW,
            now=NOW,
            message_key="mid:abc",
        )
        held.discard(session, held_id, "cli", NOW)
    with db.transaction() as session:
        assert held.held_already(session, DEV, "mid:abc") == held_id
        assert held.held_already(session, DEV, "mid:other") is None
        assert held.held_already(session, "announce@lists.example.org", "mid:abc") is None


def test_a_held_post_keeps_a_unicode_list_in_a_labels(db: Database) -> None:
    with db.transaction() as session:
        held_id = held.hold(
            session,
            list_address="Dev@Bücher.Example",
            sender=None,
            subject=None,
            reason="ban 3",
            ban_id=3,
            case=None,
            envelope_sender=None,
            envelope_recipients=["dev@bücher.example"],
            raw=RAW,
            now=NOW,
        )
        record = held.get(session, held_id)
    assert record is not None
    assert record.list == "dev@xn--bcher-kva.example"


def test_a_post_with_a_nul_in_its_subject_is_held_with_its_raw_bytes_intact(db: Database) -> None:
    """PostgreSQL text cannot hold NUL: the subject keeps U+FFFD, the bytes keep the NUL."""
    raw = RAW.replace(b"Subject: hi", b"Subject: =?utf-8?q?h=00i?=") + b"\x00\r\n"
    with db.transaction() as session:
        held_id = held.hold(
            session,
            list_address=DEV,
            sender="m@example.net",
            subject="h\x00i",
            reason="ban 3 (From)",
            ban_id=3,
            case=None,
            envelope_sender="bounce-m@example.net",
            envelope_recipients=[DEV],
            raw=raw,
            now=NOW,
        )
    with db.transaction() as session:
        record = held.get(session, held_id)
        assert record is not None
        assert record.subject == "h\ufffdi"
        assert session.execute(select(HeldPost.raw)).scalar_one() == raw


def test_a_post_whose_senders_cannot_be_addresses_is_held_whole_without_them(
    db: Database,
) -> None:
    """PostgreSQL refused a 330-character envelope sender or From (varchar(320)), so the
    client was answered 451 at every retry and moderators never saw the post."""
    long_address = "x" * 330 + "@example.net"
    with db.transaction() as session:
        held_id = held.hold(
            session,
            list_address=DEV,
            sender=long_address,
            subject="hi",
            reason="ban 3 (From)",
            ban_id=3,
            case=None,
            envelope_sender=long_address,
            envelope_recipients=[DEV],
            raw=RAW,
            now=NOW,
        )
    with db.transaction() as session:
        record = held.get(session, held_id)
        assert record is not None
        assert (record.sender, record.envelope_sender) == (None, None)
        assert held.release(session, held_id, "carol@example.org", NOW) is not None
        row = session.execute(select(OutboxEntry)).scalar_one()
        # Released with the null reverse-path, as a post without an envelope sender is.
        assert (row.envelope_sender, row.raw) == ("", RAW)


def test_a_relayed_sender_that_cannot_be_an_address_does_not_cost_the_batch(
    db: Database,
) -> None:
    """PostgreSQL refused a 330-character sender (varchar(320)) and with it every row
    written in the same batch: no-contact holds then missed those posts."""
    batch = [
        ("p1@example.net", "a@example.net", DEV, NOW),
        ("p2@example.net", "x" * 330 + "@example.net", DEV, NOW),
        ("p3@example.net", "b@example.net", DEV, NOW),
    ]
    with db.transaction() as session:
        relayed.record_many(session, batch)
    with db.transaction() as session:
        found = relayed.senders_of(session, ["p1@example.net", "p2@example.net", "p3@example.net"])
    assert found == {"p1@example.net": "a@example.net", "p3@example.net": "b@example.net"}
