"""SQLAlchemy 2 typed models of every record the contract implies (migrations mirror them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.db import StorableString, StorableText, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Meta(Base):
    """Key/value facts about the store itself (the secret's fingerprint)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(StorableString(64), primary_key=True)
    value: Mapped[str] = mapped_column(StorableText)


class Counter(Base):
    """Gapless sequences (case numbers): the row is locked in the transaction that uses it."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(StorableString(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Case(Base):
    __tablename__ = "cases"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(StorableString(16))
    subject: Mapped[str | None] = mapped_column(StorableText)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=True)
    assignee: Mapped[str | None] = mapped_column(StorableString(320))
    outcome: Mapped[str | None] = mapped_column(StorableString(16))
    outcome_note: Mapped[str | None] = mapped_column(StorableText)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accused_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    # Sent to conduct+director@ (or naming every staff member): the director alone handles it.
    director_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    possibly_related: Mapped[int | None] = mapped_column(Integer)
    merged_into: Mapped[int | None] = mapped_column(Integer)
    first_staff_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expunge_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Participant(Base):
    """One person's role in one case; `address` is normalised, `written` as they wrote it."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("case_number", "address"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_number: Mapped[int] = mapped_column(ForeignKey("cases.number", ondelete="CASCADE"))
    address: Mapped[str | None] = mapped_column(StorableString(320), index=True)
    written: Mapped[str | None] = mapped_column(StorableString(320))
    name: Mapped[str | None] = mapped_column(StorableText)
    role: Mapped[str] = mapped_column(StorableString(16))
    recused: Mapped[bool] = mapped_column(Boolean, default=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    """A message in or out of a case (case_number NULL: unfiled)."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_number: Mapped[int | None] = mapped_column(
        ForeignKey("cases.number", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str | None] = mapped_column(StorableString(998), index=True)
    direction: Mapped[str] = mapped_column(StorableString(3))
    kind: Mapped[str] = mapped_column(StorableString(16))
    sender: Mapped[str | None] = mapped_column(StorableString(320))
    recipients: Mapped[str | None] = mapped_column(StorableText)
    # The participant whose thread this message belongs to (SPEC section 4: each
    # participant's References name only what they sent or were sent).
    party: Mapped[str | None] = mapped_column(StorableString(320), index=True)
    subject: Mapped[str | None] = mapped_column(StorableText)
    text: Mapped[str | None] = mapped_column(StorableText)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    sha256: Mapped[str | None] = mapped_column(StorableString(64))
    rule: Mapped[str | None] = mapped_column(StorableString(32))
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inbox.id", ondelete="SET NULL"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboxEntry(Base):
    """Raw received mail, committed before the client's 250; processed afterwards."""

    __tablename__ = "inbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(StorableString(128), unique=True)
    message_id: Mapped[str | None] = mapped_column(StorableString(998))
    source: Mapped[str] = mapped_column(StorableString(8))
    envelope_sender: Mapped[str | None] = mapped_column(StorableString(320))
    envelope_recipients: Mapped[str] = mapped_column(StorableText)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(StorableString(12), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(StorableText)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxEntry(Base):
    """Owed mail, written in the transaction that caused it; delivered with retries."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
        Index("ix_outbox_recipient_created", "recipient", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_number: Mapped[int | None] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(StorableString(16))
    # smarthost: mail the gateway sends; upstream: a list post owed to the list server
    # (a released held post, or an LMTP recipient that deferred).
    route: Mapped[str] = mapped_column(StorableString(10), default="smarthost")
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    envelope_sender: Mapped[str] = mapped_column(StorableString(320))
    recipient: Mapped[str] = mapped_column(StorableString(320))
    message_id: Mapped[str] = mapped_column(StorableString(998), unique=True)
    bounce_id: Mapped[str | None] = mapped_column(StorableString(64), unique=True)
    caused_by: Mapped[str | None] = mapped_column(StorableString(320))
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(StorableString(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(StorableText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BanRow(Base):
    __tablename__ = "bans"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pattern: Mapped[str] = mapped_column(StorableString(1024))
    list: Mapped[str | None] = mapped_column(StorableString(320))
    reason: Mapped[str | None] = mapped_column(StorableText)
    created_by: Mapped[str] = mapped_column(StorableString(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    case_number: Mapped[int | None] = mapped_column(Integer, index=True)
    interim: Mapped[bool] = mapped_column(Boolean, default=False)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lifted_by: Mapped[str | None] = mapped_column(StorableString(320))


class HeldPost(Base):
    __tablename__ = "held_posts"
    # A client that retries a message (another list deferred it) must not hold it twice.
    __table_args__ = (Index("ix_held_posts_list_key", "list", "message_key", unique=True),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    list: Mapped[str] = mapped_column(StorableString(320))
    sender: Mapped[str | None] = mapped_column(StorableString(320))
    subject: Mapped[str | None] = mapped_column(StorableText)
    reason: Mapped[str] = mapped_column(StorableText)
    ban_id: Mapped[int | None] = mapped_column(Integer)
    case_number: Mapped[int | None] = mapped_column(Integer)
    envelope_sender: Mapped[str | None] = mapped_column(StorableString(320))
    envelope_recipients: Mapped[str] = mapped_column(StorableText)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(StorableString(12), index=True)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(StorableString(320))
    message_key: Mapped[str | None] = mapped_column(StorableString(80))  # Message-ID + body SHA-256


class RelayedPost(Base):
    """Index of relayed list posts (no-contact holds), kept 90 days; no bodies."""

    __tablename__ = "relayed_posts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(StorableString(998), index=True)
    sender: Mapped[str] = mapped_column(StorableString(320))
    list: Mapped[str] = mapped_column(StorableString(320))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """One link of the hash chain; a purge clears actor, detail and salt, never digest or link."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    case_number: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str | None] = mapped_column(StorableString(320))
    action: Mapped[str] = mapped_column(StorableString(64))
    detail: Mapped[str | None] = mapped_column(StorableText)
    salt: Mapped[str | None] = mapped_column(StorableString(32))
    digest: Mapped[str] = mapped_column(StorableString(64))
    link: Mapped[str] = mapped_column(StorableString(64))


class Sanction(Base):
    __tablename__ = "sanctions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_number: Mapped[int] = mapped_column(
        ForeignKey("cases.number", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(StorableString(24))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(StorableText)
    created_by: Mapped[str | None] = mapped_column(StorableString(320))


class Timer(Base):
    """A due time owned by the gateway (the scheduler is rebuilt from these at start)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_pending", "fired_at", "cancelled_at", "due_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(StorableString(24))
    case_number: Mapped[int | None] = mapped_column(Integer, index=True)
    ref_id: Mapped[int | None] = mapped_column(BigInteger)
    recipient: Mapped[str | None] = mapped_column(StorableString(320))
    note: Mapped[str | None] = mapped_column(StorableText)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Confirmation(Base):
    """Commands sent to conduct+moderate@ awaiting a reply to conduct+confirm-TOKEN@."""

    __tablename__ = "confirmations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(StorableString(64), unique=True)
    sender: Mapped[str] = mapped_column(StorableString(320))
    commands: Mapped[str] = mapped_column(StorableText)
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inbox.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImapSeen(Base):
    """Per (mailbox, UIDVALIDITY, UID): committed to the inbox, moved, or left (too large)."""

    __tablename__ = "imap_seen"
    mailbox: Mapped[str] = mapped_column(StorableString(512), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dedup_key: Mapped[str | None] = mapped_column(StorableString(128))
    state: Mapped[str] = mapped_column(StorableString(12))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """Leadership among instances (scheduler, IMAP watcher): held until expires_at."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(StorableString(32), primary_key=True)
    holder: Mapped[str] = mapped_column(StorableString(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PendingOriginal(Base):
    """A purged case's original still in the IMAP processed_folder: deleted by Message-ID at
    the next retention run that reaches the server (SPEC section 7a)."""

    __tablename__ = "pending_originals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_number: Mapped[int] = mapped_column(Integer, index=True)
    message_id: Mapped[str] = mapped_column(StorableString(998))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
