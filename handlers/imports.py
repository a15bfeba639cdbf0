"""`import`: past correspondence filed as if received, sending nothing (SPEC section 9)."""

from __future__ import annotations

from dataclasses import replace

from handlers.effects import (
    AddTimer,
    Effect,
    MarkOutboxFailed,
    OpenCase,
    Outcome,
    SendMail,
    UpdateCase,
)


def as_imported(outcome: Outcome) -> Outcome:
    """No mail, no timers, no change to live outbox rows (an old DSN marks nothing failed),
    and new cases marked imported with status `waiting`. Imported mail is never a staff
    touch: reminders stay quiet until staff write on the case after the import."""
    effects: list[Effect] = []
    for effect in outcome.effects:
        if isinstance(effect, SendMail | MarkOutboxFailed | AddTimer):
            continue
        if isinstance(effect, UpdateCase) and "first_staff_mail_at" in effect.changes:
            changes = {k: v for k, v in effect.changes.items() if k != "first_staff_mail_at"}
            if not changes:
                continue
            effect = replace(effect, changes=changes)
        if isinstance(effect, OpenCase):
            effect = replace(effect, imported=True, status="waiting")
        effects.append(effect)
    return replace(outcome, effects=tuple(effects))
