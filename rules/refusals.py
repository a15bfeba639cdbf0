"""The fixed wording of posting refusals: never the ban's reason or case (SPEC section 6)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo


def format_until(until: datetime, zone: tzinfo) -> str:
    local = until.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "UTC")


def posting_refused(lists: Sequence[str], until: datetime | None, zone: tzinfo) -> str:
    """`550 5.7.1 Posting to LIST is not permitted` [`until DATE`] for one or more lists."""
    text = f"550 5.7.1 Posting to {', '.join(lists)} is not permitted"
    if until is not None:
        text += f" until {format_until(until, zone)}"
    return text
