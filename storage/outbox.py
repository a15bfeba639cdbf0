"""The outbox: owed mail, written with the change that caused it, delivered with retries."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from handlers.snapshot import BouncedMail
from rules.addresses import AddressError, domain_of, normalise
from storage.claims import claim
from storage.models import OutboxEntry

PENDING = "pending"
SENT = "sent"
FAILED = "failed"  # refused permanently, or bounced; shown in the digest


@dataclass(frozen=True)
class OutgoingMail:
    id: int
    case: int | None
    kind: str
    route: str
    envelope_sender: str
    recipient: str
    message_id: str
    raw: bytes
    attempts: int
    # The lease this copy was claimed under: its delivery is recorded only while the row
    # still carries it.
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class NewMail:
    """What a handler asks to send; the sender fills in nothing but delivery state."""

    kind: str
    envelope_sender: str
    recipient: str
    message_id: str
    raw: bytes
    case: int | None = None
    route: str = "smarthost"
    automatic: bool = False
    bounce_id: str | None = None
    caused_by: str | None = None


def enqueue(session: Session, mail: NewMail, now: datetime) -> int:
    row = OutboxEntry(
        case_number=mail.case,
        kind=mail.kind,
        route=mail.route,
        automatic=mail.automatic,
        envelope_sender=mail.envelope_sender,
        recipient=mail.recipient,
        message_id=mail.message_id,
        bounce_id=mail.bounce_id,
        caused_by=mail.caused_by,
        raw=mail.raw,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def claim_due(
    session: Session,
    now: datetime,
    lease: timedelta,
    limit: int = 20,
) -> list[OutgoingMail]:
    query = select(OutboxEntry).where(
        OutboxEntry.state == PENDING, OutboxEntry.next_attempt_at <= now
    )
    return [
        OutgoingMail(
            r.id,
            r.case_number,
            r.kind,
            r.route,
            r.envelope_sender,
            r.recipient,
            r.message_id,
            r.raw or b"",
            r.attempts,
            now + lease,
        )
        for r in claim(session, OutboxEntry, query, now, lease, limit)
    ]


def _still_ours(mail: OutgoingMail) -> ColumnElement[bool]:
    """`mail`'s row while it is pending under the lease `mail` was claimed with. A claim
    is only a time: once it runs out (a stalled sender) another instance claims the row
    again with a later one and may send it; a stale copy must then neither send it again
    nor overwrite what that instance recorded (a sent mail marked failed, say)."""
    return and_(
        OutboxEntry.id == mail.id,
        OutboxEntry.state == PENDING,
        OutboxEntry.claimed_until == mail.claimed_until,
    )


def renew(
    session: Session, mail: OutgoingMail, now: datetime, lease: timedelta
) -> OutgoingMail | None:
    """`mail` with its claim extended to now + lease while it is still pending under its
    own claim; None once it is not (sent, failed or claimed again meanwhile)."""
    until = now + lease
    changed = session.execute(
        update(OutboxEntry)
        .where(_still_ours(mail))
        .values(claimed_until=until)
        .returning(OutboxEntry.id)
    )
    return None if changed.first() is None else dataclasses.replace(mail, claimed_until=until)


def mark_sent(session: Session, mail: OutgoingMail, now: datetime) -> bool:
    """Sent, unless `mail`'s claim has ended; returns whether it was recorded."""
    return _record(
        session,
        mail,
        state=SENT,
        sent_at=now,
        attempts=OutboxEntry.attempts + 1,
        claimed_until=None,
        last_error=None,
    )


def mark_retry(session: Session, mail: OutgoingMail, error: str, retry_at: datetime) -> bool:
    """Due again at `retry_at`, unless `mail`'s claim has ended; returns whether it was."""
    return _record(
        session,
        mail,
        attempts=OutboxEntry.attempts + 1,
        next_attempt_at=retry_at,
        claimed_until=None,
        last_error=_error_text(error),
    )


def mark_failed(session: Session, mail: OutgoingMail, error: str) -> bool:
    """Failed for good, unless `mail`'s claim has ended; returns whether it was."""
    return _record(
        session,
        mail,
        state=FAILED,
        attempts=OutboxEntry.attempts + 1,
        claimed_until=None,
        last_error=_error_text(error),
    )


def _record(session: Session, mail: OutgoingMail, **values: object) -> bool:
    changed = session.execute(
        update(OutboxEntry).where(_still_ours(mail)).values(**values).returning(OutboxEntry.id)
    )
    return changed.first() is not None


def _error_text(error: str) -> str:
    # A reply can carry a NUL; PostgreSQL refuses NUL in text.
    return error.replace("\x00", "")[:2000]


def _same_address(address: str) -> Callable[[str], bool]:
    """Whether a stored recipient is this address, normalised as in SPEC section 6."""
    try:
        wanted = normalise(address)
    except AddressError:
        return lambda written: written.strip().lower() == address.strip().lower()

    def same(written: str) -> bool:
        try:
            return normalise(written) == wanted
        except AddressError:
            return False

    return same


def automatic_sent_since(session: Session, recipient: str, since: datetime) -> int:
    """Automatic replies owed to one address since `since` (the RFC 3834 rate limit).

    Counted by the normalised address, so `Rita@`, `rita@` and `rita+x@` share one limit.
    The database narrows by domain (as written, and as A- and U-labels); Python compares the
    normalised addresses, which SQL cannot compute (subaddresses, BATV tags, IDNA).
    """
    written_domain = recipient.strip().strip("<>").rpartition("@")[2].lower()
    domains = {written_domain}
    with contextlib.suppress(AddressError, UnicodeError):
        ascii_domain = domain_of(recipient)
        domains.add(ascii_domain)
        domains.add(ascii_domain.encode("ascii").decode("idna"))  # its U-labels
    rows = session.execute(
        select(OutboxEntry.recipient).where(
            or_(
                *(
                    func.lower(OutboxEntry.recipient).endswith(f"@{d}", autoescape=True)
                    for d in domains
                )
            ),
            OutboxEntry.automatic.is_(True),
            OutboxEntry.created_at >= since,
        )
    ).scalars()
    same = _same_address(recipient)
    return sum(1 for written in rows if same(written))


def bounced(
    session: Session, bounce_id: str | None, message_ids: tuple[str, ...]
) -> BouncedMail | None:
    """The entry a bounce answers, by its bounce ID, else by a Message-ID the DSN reports."""
    query = select(OutboxEntry)
    if bounce_id is not None:
        query = query.where(OutboxEntry.bounce_id == bounce_id)
    elif message_ids:
        query = query.where(OutboxEntry.message_id.in_(message_ids[:20]))
    else:
        return None
    row = session.execute(query.order_by(OutboxEntry.id).limit(1)).scalar_one_or_none()
    if row is None:
        return None
    return BouncedMail(
        outbox_id=row.id,
        bounce_id=row.bounce_id,
        case=row.case_number,
        kind=row.kind,
        recipient=row.recipient,
        caused_by=row.caused_by,
        message_id=row.message_id,
        created_at=row.created_at,
    )


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxEntry.state, func.count()).group_by(OutboxEntry.state))
    return {str(state): int(count) for state, count in rows.all()}
