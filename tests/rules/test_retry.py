"""Retry policy: back-off doubles from retry_after up to 1h; 5xx is final; give up at 5 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rules.retry import DeliveryResult, classify, expired, next_attempt

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, MINUTE),
        (1, 2 * MINUTE),
        (2, 4 * MINUTE),
        (5, 32 * MINUTE),
        (6, timedelta(hours=1)),
        (7, timedelta(hours=1)),
        (10_000, timedelta(hours=1)),
    ],
)
def test_the_first_retry_waits_retry_after_and_each_next_doubles_up_to_an_hour(
    attempts: int, delay: timedelta
) -> None:
    assert next_attempt(attempts, MINUTE, NOW) == NOW + delay


def test_a_first_delay_longer_than_the_cap_is_kept() -> None:
    assert next_attempt(3, timedelta(hours=2), NOW) == NOW + timedelta(hours=2)


def test_a_custom_cap_bounds_the_back_off() -> None:
    assert next_attempt(9, MINUTE, NOW, cap=timedelta(minutes=5)) == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, "sent"),
        (251, "sent"),
        (421, "temporary"),
        (451, "temporary"),
        (452, "temporary"),
        (550, "permanent"),
        (554, "permanent"),
        (None, "temporary"),
        (354, "temporary"),
    ],
)
def test_reply_codes_classify_as_sent_temporary_or_permanent(
    code: int | None, outcome: str
) -> None:
    assert classify(code) == outcome


def test_a_5xx_in_the_session_is_a_configuration_problem_and_only_temporary() -> None:
    assert classify(535, phase="session") == "temporary"
    assert classify(554, phase="session") == "temporary"


def test_552_after_rcpt_is_treated_as_452_per_rfc_5321() -> None:
    assert classify(552, phase="rcpt") == "temporary"
    assert classify(550, phase="rcpt") == "permanent"
    assert classify(552) == "permanent"


def test_a_delivery_result_from_a_reply_carries_code_and_detail() -> None:
    result = DeliveryResult.from_reply(550, "no such user", "rcpt")
    assert result == DeliveryResult("permanent", 550, "no such user")


def test_mail_is_given_up_after_five_days_and_not_before() -> None:
    created = NOW - timedelta(days=5)
    assert expired(created, NOW)
    assert not expired(created + timedelta(seconds=1), NOW)
    assert expired(NOW - timedelta(hours=2), NOW, max_age=timedelta(hours=1))
