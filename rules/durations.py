"""Durations (`90s`, `30m`, `24h`, `7d`, `2w`), sizes (`512K`, `25M`) and `YYYY-MM-DD` dates."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, tzinfo

from rules.errors import GatewayError

# [0-9], not \d: \d also takes other scripts' digits, which the reader of a file or a
# command cannot tell from what they look like.
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_SIZE = re.compile(r"([0-9]{1,12})([KM]?)")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_FACTOR = {"": 1, "K": 1024, "M": 1024 * 1024}

DURATION_EXPECTED = "a duration such as 90s, 30m, 24h, 7d or 2w"
# Ten years: longer than any retention, reminder or ban anyone has asked for, and far
# below what timedelta and a datetime plus it can hold (200000000w overflowed).
MAX_DURATION_DAYS = 3650
MAX_DURATION = timedelta(days=MAX_DURATION_DAYS)
DURATION_TOO_LONG = f"a duration of at most {MAX_DURATION_DAYS}d (about ten years)"
SIZE_EXPECTED = "a size in bytes, or with K or M (1024-based) such as 512K or 25M"
DATE_EXPECTED = "a date YYYY-MM-DD"


class BadValue(GatewayError):
    """A duration, size or date that does not parse; names what was expected."""

    def __init__(self, value: str, expected: str) -> None:
        super().__init__(f"{value!r}: expected {expected}")
        self.value = value
        self.expected = expected


def parse_duration(text: str) -> timedelta:
    """`24h` -> 24 hours. A bare number has no unit and is refused, as is one past 3650d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise BadValue(text, DURATION_EXPECTED)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * _UNIT_SECONDS["d"]:
        raise BadValue(text, DURATION_TOO_LONG)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units `parse_duration` reads."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_size(text: str) -> int:
    """`25M` -> 26214400 bytes; K and M are 1024-based."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise BadValue(text, SIZE_EXPECTED)
    return int(match.group(1)) * _SIZE_FACTOR[match.group(2)]


def parse_date(text: str, zone: tzinfo) -> datetime:
    """`2026-12-01` -> 00:00 at the start of that day in `zone` (SPEC section 9)."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise BadValue(text, DATE_EXPECTED)
    try:
        day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise BadValue(text, DATE_EXPECTED) from None
    return datetime(day.year, day.month, day.day, tzinfo=zone)
