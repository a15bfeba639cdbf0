"""Which reminders are due (SPEC section 7), from a case's clock and `now`; never the wall clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo

from rules import command_types as ct
from rules.commands import CommandError, parse_commands

OPEN_STATUSES = frozenset({"new", "investigating", "waiting", "resolved"})
# Who a reminder goes to.
STAFF = "staff"
ASSIGNEE = "assignee"  # the assignee, or all staff when nobody is assigned
STAFF_AND_DIRECTOR = "staff+director"


@dataclass(frozen=True)
class Periods:
    acknowledge_within: timedelta
    urgent_repeat: timedelta
    escalate_within: timedelta
    follow_up_after: timedelta


@dataclass(frozen=True)
class CaseClock:
    """What reminders look at; `last_fired` is the last reminder of each kind (our table)."""

    number: int
    status: str
    urgent: bool
    escalated: bool
    imported: bool
    created_at: datetime
    first_staff_mail_at: datetime | None
    last_activity_at: datetime
    last_fired: Mapping[str, datetime] = field(default_factory=dict)
    urgent_since: datetime | None = None  # the latest #urgent; None: urgent from intake
    last_reply_at: datetime | None = None  # the latest #reply to the reporter

    @property
    def answered(self) -> bool:
        """A #reply since the case became urgent ends its pages; one from before does not."""
        since = self.urgent_since or self.created_at
        return self.last_reply_at is not None and self.last_reply_at >= since


@dataclass(frozen=True)
class Due:
    case: int
    kind: str  # acknowledge | urgent | escalate | follow-up
    audience: str


def _after(anchor: datetime, period: timedelta, now: datetime) -> bool:
    return period > timedelta(0) and now >= anchor + period


def due(case: CaseClock, periods: Periods, now: datetime) -> list[Due]:
    """Each kind fires at most once per call: a reminder missed while the gateway was down
    fires once at start, and the next one counts its period from then (no burst)."""
    if case.status not in OPEN_STATUSES:
        return []
    if case.imported and case.first_staff_mail_at is None:
        return []  # imported cases stay quiet until staff touch them
    found: list[Due] = []
    last = case.last_fired
    if case.first_staff_mail_at is None and _after(
        last.get("acknowledge", case.created_at), periods.acknowledge_within, now
    ):
        found.append(Due(case.number, "acknowledge", STAFF))
    if (
        case.urgent
        and not case.answered
        and _after(last.get("urgent", case.created_at), periods.urgent_repeat, now)
    ):
        found.append(Due(case.number, "urgent", STAFF_AND_DIRECTOR))
    if not case.escalated and _after(
        last.get("escalate", case.created_at), periods.escalate_within, now
    ):
        found.append(Due(case.number, "escalate", ASSIGNEE))
    idle_since = max(case.last_activity_at, last.get("follow-up", case.last_activity_at))
    if _after(idle_since, periods.follow_up_after, now):
        found.append(Due(case.number, "follow-up", ASSIGNEE))
    return found


SUBJECTS = {
    "acknowledge": "Reminder: no staff reply yet",
    "urgent": "Reminder: URGENT case waiting for a reply",
    "escalate": "Reminder: not yet escalated to the executive director",
    "follow-up": "Reminder: no activity for a while",
    "remind": "Reminder",
    "ban-end": "Reminder: a ban of this case has ended",
    "sanction-end": "Reminder: a sanction of this case has ended",
}


def previous_daily(now: datetime, at: time, zone: tzinfo) -> datetime:
    """The latest moment at `at` o'clock in `zone` that is not after `now`.

    Compared as instants: two datetimes with the same tzinfo compare by wall time, which
    is wrong in the hour a DST change repeats.
    """
    local = now.astimezone(zone)
    today = datetime.combine(local.date(), at, tzinfo=zone)
    if today.astimezone(UTC) <= now.astimezone(UTC):
        return today
    return datetime.combine(local.date() - timedelta(days=1), at, tzinfo=zone)


def urgent_switch(lines: Sequence[str], at: datetime) -> bool | None:
    """What the command lines of one staff mail did to urgency: the last `#urgent` (True)
    or `#urgent off` (False) among them, or None."""
    parsed = parse_commands("\n".join(lines), sender="staff@invalid", tz=UTC, now=at)
    if isinstance(parsed, CommandError):
        return None
    found: bool | None = None
    for command in parsed.commands:
        if isinstance(command, ct.Urgent):
            found = command.on
    return found
