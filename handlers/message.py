"""A received message as the handlers see it: decided headers, text, attachments, envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rules.loops import LoopFacts


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass(frozen=True)
class DeliveryStatus:
    """One recipient block of a DSN (RFC 3464 section 2.3)."""

    recipient: str  # Final-Recipient's address, as reported
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. 5.1.1
    diagnostic: str  # Diagnostic-Code, e.g. "smtp; 550 5.1.1 no such user"


@dataclass(frozen=True)
class EnclosedMessage:
    """A message attached whole (message/rfc822, "forward as attachment"): part of what the
    report says, so it names people as the report's own headers and text do (SPEC section 5)."""

    addresses: tuple[str, ...]  # its From, To, Cc, Reply-To and Sender, normalised
    header_text: str  # those fields decoded, display names included, and its Subject
    text: str  # plain text; HTML rendered as text


@dataclass(frozen=True)
class ParsedMessage:
    """Parsed tolerantly: a defect never raises, it is listed in `defects`."""

    message_id: str | None
    from_name: str
    from_address: str | None  # normalised; None when missing or unparsable
    from_written: str | None  # as written, where mail to the sender goes
    subject: str
    date: datetime | None
    references: tuple[str, ...]  # In-Reply-To, then References nearest first
    to_cc: tuple[str, ...]  # normalised
    header_text: str  # decoded To/Cc/Subject (not From), for finding names
    text: str  # plain text; HTML-only mail rendered as text
    html_only: bool
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    loop: LoopFacts
    reported_message_ids: tuple[str, ...]  # a DSN: the Message-IDs of the mail it reports
    delivery_status: tuple[DeliveryStatus, ...] = ()  # a DSN: each recipient's outcome
    enclosed: tuple[EnclosedMessage, ...] = ()  # attached messages, nested ones included
