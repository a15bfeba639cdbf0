"""Which reminders are due, with fixed clocks (SPEC section 7)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rules.reminders import CaseClock, Periods, due, previous_daily, urgent_switch

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
    answered = clock(urgent=True, first_staff_mail_at=T0, last_reply_at=T0 + 2 * H)
    assert kinds(answered, T0 + 5 * H) == []


def test_only_a_reply_after_the_case_became_urgent_stops_the_pages() -> None:
    early_reply = clock(
        urgent=True, first_staff_mail_at=T0, last_reply_at=T0 + H, urgent_since=T0 + 2 * H
    )
    assert kinds(early_reply, T0 + 3 * H) == ["urgent"]
    same_mail = clock(
        urgent=True, first_staff_mail_at=T0, last_reply_at=T0 + 2 * H, urgent_since=T0 + 2 * H
    )
    assert kinds(same_mail, T0 + 3 * H) == []


def test_the_urgent_switch_of_a_staff_mail_is_its_last_urgent_line() -> None:
    assert urgent_switch(["#urgent"], T0) is True
    assert urgent_switch(["#status investigating", "#urgent off"], T0) is False
    assert urgent_switch(["#urgent off", "#urgent"], T0) is True
    assert urgent_switch(["#status waiting"], T0) is None


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


def test_the_digest_is_due_at_digest_at_from_that_moment_on() -> None:
    zone = ZoneInfo("America/New_York")
    at = time(9, 0)
    due = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 09:00 in New York (EST)
    assert previous_daily(due, at, zone) == due
    assert previous_daily(due - timedelta(seconds=1), at, zone) == due - timedelta(days=1)
    assert previous_daily(due + 23 * H, at, zone) == due


def test_the_digest_keeps_its_wall_clock_time_across_dst_changes() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: clocks go forward at 02:00; 09:00 is 07:00 UTC from that day on.
    after_spring = datetime(2026, 3, 29, 7, 30, tzinfo=UTC)
    found = previous_daily(after_spring, time(9, 0), berlin)
    assert found.astimezone(UTC) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    before = datetime(2026, 3, 29, 7, 59, tzinfo=UTC) - timedelta(hours=1)  # 08:59 CEST
    assert previous_daily(before, time(9, 0), berlin).astimezone(UTC) == datetime(
        2026, 3, 28, 8, 0, tzinfo=UTC
    )
    # 2026-10-25: 02:00-03:00 happens twice. A digest at 02:30 is due at its first one.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET, after the first 02:30
    assert previous_daily(first, time(2, 30), berlin).astimezone(UTC) == first
    assert previous_daily(second, time(2, 30), berlin).astimezone(UTC) == first
