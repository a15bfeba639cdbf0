"""Delivery status notifications: recorded against the outbound mail they answer, never a case."""

from __future__ import annotations

from handlers.effects import Audit, MarkOutboxFailed, Outcome, RecordIncoming
from handlers.message import ParsedMessage


def record(message: ParsedMessage, bounce_id: str | None) -> Outcome:
    """The outbox entry is found by its bounce ID, else by the Message-IDs the DSN reports."""
    effects = (
        RecordIncoming(None, "bounce", "bounce", message.from_address),
        MarkOutboxFailed(bounce_id, message.reported_message_ids),
        Audit(
            None,
            "bounce-received",
            None,
            {"bounce_id": bounce_id, "reported": list(message.reported_message_ids)},
        ),
    )
    return Outcome("bounce", "bounce", effects)
