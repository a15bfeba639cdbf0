"""The outbox: owed mail is claimed once, retried after back-off, marked sent or failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from storage import outbox
from storage.db import Database
from storage.models import OutboxEntry

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=1)


def mail(
    message_id: str,
    *,
    automatic: bool = False,
    recipient: str = "r@example.net",
) -> outbox.NewMail:
    return outbox.NewMail(
        kind="ack",
        envelope_sender="",
        recipient=recipient,
        message_id=message_id,
        raw=b"Subject: x\r\n\r\nhi\r\n",
        automatic=automatic,
    )


def test_owed_mail_is_claimed_sent_and_not_claimed_again(db: Database) -> None:
    with db.transaction() as session:
        mail_id = outbox.enqueue(session, mail("m1@example.org"), NOW)
    with db.transaction() as session:
        claimed = outbox.claim_due(session, NOW, LEASE)
        assert [m.id for m in claimed] == [mail_id]
        assert outbox.mark_sent(session, claimed[0], NOW)
    with db.transaction() as session:
        assert outbox.claim_due(session, NOW + timedelta(hours=1), LEASE) == []
        assert outbox.count_by_state(session) == {"sent": 1}


def test_a_temporary_failure_is_retried_at_its_time(db: Database) -> None:
    with db.transaction() as session:
        mail_id = outbox.enqueue(session, mail("m2@example.org"), NOW)
        [claimed] = outbox.claim_due(session, NOW, LEASE)
        assert claimed.id == mail_id
        assert outbox.mark_retry(session, claimed, "451 try later", NOW + timedelta(minutes=1))
    with db.transaction() as session:
        assert outbox.claim_due(session, NOW + timedelta(seconds=59), LEASE) == []
        assert len(outbox.claim_due(session, NOW + timedelta(minutes=1), LEASE)) == 1


def test_a_crashed_sender_s_claim_expires_and_the_mail_is_sent_by_another(db: Database) -> None:
    with db.transaction() as session:
        outbox.enqueue(session, mail("m3@example.org"), NOW)
        assert len(outbox.claim_due(session, NOW, LEASE)) == 1
    with db.transaction() as session:
        again = outbox.claim_due(session, NOW + LEASE, LEASE)
    assert [m.message_id for m in again] == ["m3@example.org"]


def _state(db: Database, mail_id: int) -> tuple[str, int, datetime | None, str | None]:
    with db.transaction() as session:
        row = session.get(OutboxEntry, mail_id)
        assert row is not None
        return row.state, row.attempts, row.sent_at, row.last_error


def test_a_stale_copy_records_nothing_over_what_another_sender_recorded(db: Database) -> None:
    """A sender whose claim ran out neither renews it nor marks the row, which another
    sender claimed since and sent: a sent mail never turns failed or due again."""
    with db.transaction() as session:
        mail_id = outbox.enqueue(session, mail("m5@example.org"), NOW)
        [stale] = outbox.claim_due(session, NOW, LEASE)
    with db.transaction() as session:
        [fresh] = outbox.claim_due(session, NOW + LEASE, LEASE)
    later = NOW + LEASE + timedelta(seconds=10)
    with db.transaction() as session:
        assert outbox.renew(session, stale, later, LEASE) is None
        assert not outbox.mark_sent(session, stale, later)
        assert not outbox.mark_retry(session, stale, "451 later", later)
        assert not outbox.mark_failed(session, stale, "550 no")
    assert _state(db, mail_id) == ("pending", 0, None, None)
    with db.transaction() as session:
        assert outbox.mark_sent(session, fresh, later)
    with db.transaction() as session:
        assert outbox.renew(session, fresh, later, LEASE) is None
        assert not outbox.mark_failed(session, stale, "550 no")
        assert not outbox.mark_failed(session, fresh, "550 no")
        assert not outbox.mark_retry(session, fresh, "451 later", later)
    assert _state(db, mail_id) == ("sent", 1, later, None)


def test_a_claim_renewed_in_time_is_the_one_recorded(db: Database) -> None:
    with db.transaction() as session:
        mail_id = outbox.enqueue(session, mail("m6@example.org"), NOW)
        [claimed] = outbox.claim_due(session, NOW, LEASE)
    later = NOW + LEASE / 2
    with db.transaction() as session:
        renewed = outbox.renew(session, claimed, later, LEASE)
    assert renewed is not None
    assert renewed.claimed_until == later + LEASE
    with db.transaction() as session:
        # Not claimable at the first claim's end: the renewed one still stands.
        assert outbox.claim_due(session, NOW + LEASE, LEASE) == []
        assert not outbox.mark_sent(session, claimed, later)
        assert outbox.mark_retry(session, renewed, "451 \x00later", later)
    assert _state(db, mail_id) == ("pending", 1, None, "451 later")


def test_message_ids_are_unique_so_a_resend_is_recognisable(db: Database) -> None:
    with db.transaction() as session:
        outbox.enqueue(session, mail("same@example.org"), NOW)
    with pytest.raises(IntegrityError), db.transaction() as session:
        outbox.enqueue(session, mail("same@example.org"), NOW)


def test_automatic_replies_are_counted_per_recipient_for_the_rate_limit(db: Database) -> None:
    with db.transaction() as session:
        for n in range(3):
            outbox.enqueue(
                session, mail(f"a{n}@example.org", automatic=True), NOW + timedelta(minutes=n)
            )
        outbox.enqueue(session, mail("staff@example.org"), NOW)
        outbox.enqueue(session, mail("b@example.org", automatic=True, recipient="o@x.net"), NOW)
    with db.transaction() as session:
        assert outbox.automatic_sent_since(session, "r@example.net", NOW) == 3
        assert (
            outbox.automatic_sent_since(session, "r@example.net", NOW + timedelta(minutes=1)) == 2
        )


def test_the_rate_limit_counts_one_address_however_it_is_written(db: Database) -> None:
    # SPEC section 6 normalisation: case, subaddress, BATV tag and IDNA do not make a
    # second address with a limit of its own.
    written = [
        "Rita@Example.NET",
        "rita@example.net",
        "rita+conduct@example.net",
        "prvs=1234abcd=rita@example.net",
    ]
    with db.transaction() as session:
        for n, recipient in enumerate(written):
            outbox.enqueue(
                session, mail(f"w{n}@example.org", automatic=True, recipient=recipient), NOW
            )
        outbox.enqueue(
            session, mail("o1@example.org", automatic=True, recipient="fred@example.net"), NOW
        )
        outbox.enqueue(
            session, mail("o2@example.org", automatic=True, recipient="rita@example.com"), NOW
        )
        outbox.enqueue(
            session, mail("i1@example.org", automatic=True, recipient="u@bücher.example"), NOW
        )
    with db.transaction() as session:
        assert outbox.automatic_sent_since(session, "RITA@example.net", NOW) == 4
        assert outbox.automatic_sent_since(session, "rita@EXAMPLE.net", NOW) == 4
        assert outbox.automatic_sent_since(session, "u@xn--bcher-kva.example", NOW) == 1
        assert outbox.automatic_sent_since(session, "U@Bücher.example", NOW) == 1
