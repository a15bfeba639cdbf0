"""Tells staff, once, about an IMAP message left in the folder (issue 6): too large to take
in, or refused by the database. Audit plus mail."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import parsing, snapshot_builder
from gateway.config import Settings
from handlers import report_intake, templates
from handlers.compose import Envelope, compose
from handlers.snapshot import Person
from rules import tokens
from rules.envelope import recover
from storage import audit, cases, outbox

ACTION = "imap-too-large"
KEYWORD = "$ConductTooLarge"  # IMAP keyword (RFC 3501 flag-keyword) left on the message
REFUSED_ACTION = "imap-store-refused"
REFUSED_KEYWORD = "$ConductRefused"
# Shown in the notice: Message-ID, From, Subject, Date. Deciding who gets it: From, To, Cc
# and Subject name people; X-Original-To, Delivered-To and To say which conduct address
# it was sent to, as rules/envelope.py recovers it for mail that is taken in.
HEADER_FIELDS = (
    "MESSAGE-ID",
    "FROM",
    "SUBJECT",
    "DATE",
    "TO",
    "CC",
    "X-ORIGINAL-TO",
    "DELIVERED-TO",
)


@dataclass(frozen=True)
class Left:
    """A message left in the watched folder, for staff to read there."""

    folder: str
    uidvalidity: int
    uid: int
    size: int
    headers: bytes  # the fields of HEADER_FIELDS, as the server sent them
    refused: bool = False  # fetched, but the database would not store it (not too large)

    @property
    def keyword(self) -> str:
        return REFUSED_KEYWORD if self.refused else KEYWORD


def _header_values(raw: bytes) -> dict[str, str]:
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    values: dict[str, str] = {}
    for name in ("message-id", "from", "subject", "date"):
        try:
            value = parsed.get(name)
        except Exception:  # a malformed field is shown as unknown
            value = None
        values[name] = " ".join(str(value).split())[:300] if value is not None else "(none)"
    return values


def _audience(settings: Settings, headers: bytes, now: datetime) -> tuple[Person, ...]:
    """Whom the report would reach: the notice carries its From and Subject, so staff its
    header fields name are left out, and mail to conduct+director@ goes to the director."""
    conduct = settings.gateway.conduct_address
    try:
        recipients = recover(headers, conduct).recipients
    except Exception:  # unreadable headers: the mailbox is the conduct address anyway
        recipients = ()
    where = snapshot_builder.addressing(settings, recipients or (conduct,), now)
    to_director = isinstance(where.detail, tokens.Director)
    team = snapshot_builder.team_from(settings)
    return report_intake.audience(parsing.parse(headers, None), team, to_director)


def report(session: Session, settings: Settings, found: Left, now: datetime) -> int:
    """In the caller's transaction: an audit event and one mail to each staff member (or
    the director) the report would reach; returns how many were told."""
    gateway = settings.gateway
    values = _header_values(found.headers)
    told = _audience(settings, found.headers, now)
    audit.append(
        session,
        at=now,
        action=REFUSED_ACTION if found.refused else ACTION,
        actor=None,
        detail={
            "folder": found.folder,
            "uidvalidity": found.uidvalidity,
            "uid": found.uid,
            "size": found.size,
            "message_id": values["message-id"],
        },
    )
    body = templates.render(
        "imap-refused" if found.refused else "imap-too-large",
        {
            "folder": found.folder,
            "limit": str(settings.smtp.max_message_size),
            "keyword": found.keyword,
            "size": str(found.size),
            "message_id": values["message-id"],
            "sender": values["from"],
            "subject": values["subject"],
            "date": values["date"],
            "uid": str(found.uid),
            "uidvalidity": str(found.uidvalidity),
        },
    )
    conduct = gateway.conduct_address
    domain = conduct.rpartition("@")[2]
    what = "could not be stored" if found.refused else "too large to take in"
    subject = f"[{gateway.case_tag}] A message {what} waits in {found.folder}"
    for person in told:
        message_id = tokens.new_message_id(domain)
        raw = compose(
            Envelope(
                from_name=gateway.case_tag,
                from_address=conduct,
                to=person.address,
                subject=subject,
                message_id=message_id,
                date=now,
            ),
            body,
        )
        bounce_id = tokens.new_bounce_id()
        outbox_id = outbox.enqueue(
            session,
            outbox.NewMail(
                kind="notification",
                envelope_sender=tokens.subaddress_for(conduct, tokens.Bounce(bounce_id)),
                recipient=person.address,
                message_id=message_id,
                raw=raw,
                bounce_id=bounce_id,
            ),
            now,
        )
        cases.record_message(
            session,
            cases.NewMessage(
                case=None,
                direction="out",
                kind="notification",
                at=now,
                message_id=message_id,
                sender=conduct,
                recipients=(person.address,),
                party=person.address,
                subject=subject,
                outbox_id=outbox_id,
            ),
        )
    return len(told)
