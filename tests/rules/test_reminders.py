"""Which reminders are due, with fixed clocks (SPEC section 7)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from rules.reminders import CaseClock, Periods, due, previous_daily

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
PERIODS = Periods(
    acknowledge_within=24 * H, urgent_repeat=H, escalate_within=72 * H, follow_up_after=7 * 24 * H
)


def clock(**changes: object) -> CaseClock:
    values: dict[str, object] = {
        "number": 1,
        "status": "new",
        "urgent": False,
        "escalated": False,
        "imported": False,
        "created_at": T0,
        "first_staff_mail_at": None,
        "last_activity_at": T0,
        "replied": False,
        "last_fired": {},
    }
    values.update(changes)
    return CaseClock(**values)  # type: ignore[arg-type]


def kinds(case: CaseClock, now: datetime) -> list[str]:
    return [d.kind for d in due(case, PERIODS, now)]


def test_the_acknowledgement_reminder_comes_after_the_period_and_repeats() -> None:
    assert kinds(clock(), T0 + 24 * H - timedelta(seconds=1)) == []
    assert kinds(clock(), T0 + 24 * H) == ["acknowledge"]
    fired = clock(last_fired={"acknowledge": T0 + 24 * H})
    assert kinds(fired, T0 + 47 * H) == []
    assert kinds(fired, T0 + 48 * H) == ["acknowledge"]


def test_a_staff_mail_stops_the_acknowledgement_reminder() -> None:
    assert kinds(clock(first_staff_mail_at=T0 + H), T0 + 30 * H) == []


def test_a_reminder_missed_while_down_fires_once_not_in_a_burst() -> None:
    late = T0 + 24 * 10 * H  # ten periods missed
    assert kinds(clock(last_activity_at=late), late).count("acknowledge") == 1
    after = clock(last_activity_at=late, last_fired={"acknowledge": late})
    assert "acknowledge" not in kinds(after, late + H)


def test_urgent_pages_repeat_until_a_reply() -> None:
    assert kinds(clock(urgent=True, first_staff_mail_at=T0), T0 + H) == ["urgent"]
    paged = clock(urgent=True, first_staff_mail_at=T0, last_fired={"urgent": T0 + H})
    assert kinds(paged, T0 + 2 * H) == ["urgent"]
    assert kinds(clock(urgent=True, first_staff_mail_at=T0, replied=True), T0 + 5 * H) == []


def test_escalation_and_follow_up_reminders() -> None:
    quiet = clock(first_staff_mail_at=T0)
    assert kinds(quiet, T0 + 72 * H) == ["escalate"]
    assert kinds(clock(first_staff_mail_at=T0, escalated=True), T0 + 72 * H) == []
    assert "follow-up" in kinds(clock(first_staff_mail_at=T0, escalated=True), T0 + 7 * 24 * H)
    busy = clock(first_staff_mail_at=T0, escalated=True, last_activity_at=T0 + 6 * 24 * H)
    assert kinds(busy, T0 + 7 * 24 * H) == []


def test_closed_and_untouched_imported_cases_are_quiet() -> None:
    assert kinds(clock(status="closed"), T0 + 1000 * H) == []
    assert kinds(clock(imported=True, status="waiting"), T0 + 1000 * H) == []
    touched = clock(imported=True, status="waiting", first_staff_mail_at=T0)
    assert kinds(touched, T0 + 72 * H) == ["escalate"]


def test_the_previous_digest_time_is_in_the_configured_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # 08:30 in Berlin
    assert previous_daily(now, time(9, 0), berlin) == datetime(2026, 11, 24, 9, 0, tzinfo=berlin)
    later = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
    assert previous_daily(later, time(9, 0), berlin) == datetime(2026, 11, 25, 9, 0, tzinfo=berlin)


def test_the_digest_trigger_fires_at_digest_at_in_the_zone() -> None:
    """Drive APScheduler's trigger with a fixed now, not the wall clock."""
    berlin = ZoneInfo("Europe/Berlin")
    trigger = CronTrigger(hour=9, minute=0, timezone=berlin)
    now = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    assert fire == datetime(2026, 11, 25, 9, 0, tzinfo=berlin)
