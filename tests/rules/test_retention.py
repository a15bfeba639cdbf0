"""Expunge dates per outcome class (SPEC section 7a), with fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rules.retention import Retention, ban_end, expunge_at, extended, is_due, settled

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
W = timedelta(weeks=1)
POLICY = Retention(
    no_violation=timedelta(0), resolved=60 * W, flagged=112 * W, banned_extra=112 * W
)


def test_each_outcome_class_has_its_own_date() -> None:
    assert expunge_at("no-violation", T0, POLICY, []) == T0
    assert expunge_at("resolved", T0, POLICY, []) == T0 + 60 * W
    assert expunge_at("flagged", T0, POLICY, []) == T0 + 112 * W


def test_banned_is_the_last_ban_end_plus_the_extra_time() -> None:
    ends = [T0 + 10 * W, T0 + 30 * W]
    assert expunge_at("banned", T0, POLICY, ends) == T0 + 30 * W + 112 * W
    # A ban that ended before the case closed counts from closing.
    assert expunge_at("banned", T0, POLICY, [T0 - W]) == T0 + 112 * W
    assert expunge_at("banned", T0, POLICY, []) == T0 + 112 * W


def test_banned_with_a_ban_without_end_has_no_date_yet() -> None:
    assert expunge_at("banned", T0, POLICY, [T0 + W, None]) is None


def test_a_case_is_due_when_its_date_is_not_after_now() -> None:
    assert is_due(T0, T0)
    assert is_due(T0, T0 + timedelta(microseconds=1))
    assert not is_due(T0, T0 - timedelta(microseconds=1))
    assert not is_due(None, T0 + 1000 * W)


def test_lifting_a_ban_early_is_its_end() -> None:
    assert ban_end(T0 + 10 * W, T0 + W) == T0 + W
    assert ban_end(None, T0 + W) == T0 + W
    assert ban_end(T0 + W, T0 + 10 * W) == T0 + W  # lifted after it had expired
    assert ban_end(T0 + W, None) == T0 + W
    assert ban_end(None, None) is None


def test_a_later_case_extends_and_an_open_one_keeps_it_open() -> None:
    assert extended(T0, T0 + W) == T0 + W
    assert extended(T0 + 2 * W, T0 + W) == T0 + 2 * W
    assert extended(T0, None) is None
    assert extended(None, T0) is None


def test_settled_takes_the_latest_of_its_own_date_and_the_later_cases() -> None:
    assert settled(T0, []) == T0
    assert settled(T0, [T0 + W, T0 - W]) == T0 + W
    assert settled(T0, [T0 + W, None]) is None
    assert settled(None, [T0]) is None
