"""`import`: past correspondence filed as if received, sending nothing (SPEC section 9)."""

from __future__ import annotations

from dataclasses import replace

from handlers.effects import Effect, OpenCase, Outcome, SendMail


def as_imported(outcome: Outcome) -> Outcome:
    """No mail, and new cases marked imported with status `waiting` (no reminders)."""
    effects: list[Effect] = []
    for effect in outcome.effects:
        if isinstance(effect, SendMail):
            continue
        if isinstance(effect, OpenCase):
            effect = replace(effect, imported=True, status="waiting")
        effects.append(effect)
    return replace(outcome, effects=tuple(effects))
