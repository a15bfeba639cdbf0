"""Parsers for single configuration values; each raises ValueProblem naming what was expected."""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rules.durations import (
    MAX_DURATION_DAYS,
    SIZE_EXPECTED,
    BadValue,
    parse_duration,
    parse_size,
)
from rules.errors import GatewayError


class ValueProblem(GatewayError):
    """A value that does not parse; `expected` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class HostPort:
    """A TCP endpoint; port 0 asks the OS for a free one (tests use this)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Person:
    """A configured person: display name (may be empty) and address as written."""

    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_HOSTPORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})"
)
# [0-9], not \d or str.isdigit(): both take digits of other scripts, and isdigit() also
# superscripts, which int() then refuses with a ValueError (a traceback at start-up), as
# it refuses more than 4300 digits.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")
# Far more than any server handles; bigger ones overflow the listen() backlog.
MAX_COUNT = 1_000_000
ADDRESS_EXPECTED = "an email address such as conduct@example.org"
BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except BadValue as error:
        raise ValueProblem(error.expected) from None


def size(text: str) -> int:
    try:
        value = parse_size(text)
    except BadValue:
        raise ValueProblem(SIZE_EXPECTED) from None
    if value <= 0:
        raise ValueProblem(SIZE_EXPECTED)
    return value


def domain(text: str) -> str:
    value = text.strip().lower().rstrip(".")
    try:
        ascii_value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueProblem("a domain name such as example.org") from None
    if not _DOMAIN.fullmatch(ascii_value) or "." not in ascii_value:
        raise ValueProblem("a domain name such as example.org")
    return ascii_value


def address(text: str) -> str:
    """A bare address (no display name), domain lower-cased and in IDNA A-labels."""
    value = text.strip()
    local, at, dom = value.rpartition("@")
    if not at or not local or not _LOCAL.fullmatch(local) or local.startswith("."):
        raise ValueProblem(ADDRESS_EXPECTED)
    try:
        return f"{local}@{domain(dom)}"
    except ValueProblem:
        raise ValueProblem(ADDRESS_EXPECTED) from None


def people(text: str) -> tuple[Person, ...]:
    """`Alice Example <alice@example.org>, bob@example.org` -> two people."""
    expected = "a comma-separated list of addresses, each optionally 'Name <address>'"
    if not text.strip():
        return ()
    try:
        header = email.policy.default.header_factory("to", text.strip())
        found = getattr(header, "addresses", ())
    except (IndexError, ValueError, TypeError):
        # The standard library's header parser raises these on some malformed input.
        raise ValueProblem(expected) from None
    if header.defects or not found or any(not item.addr_spec for item in found):
        raise ValueProblem(expected)
    return tuple(Person(item.display_name.strip(), address(item.addr_spec)) for item in found)


def person(text: str) -> Person:
    found = people(text)
    if len(found) != 1:
        raise ValueProblem("one address, optionally 'Name <address>'")
    return found[0]


def addresses(text: str) -> tuple[str, ...]:
    return tuple(address(part) for part in _split_list(text))


def domains(text: str) -> tuple[str, ...]:
    return tuple(domain(part) for part in _split_list(text))


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def host_port(text: str) -> HostPort:
    match = _HOSTPORT.fullmatch(text.strip())
    if match is None or int(match.group("port")) > 65535:
        raise ValueProblem("HOST:PORT such as 127.0.0.1:2525 or [::1]:25")
    return HostPort(match.group("v6") or match.group("host"), int(match.group("port")))


def optional_host_port(text: str) -> HostPort | None:
    return host_port(text) if text.strip() else None


def boolean(text: str) -> bool:
    try:
        return BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueProblem("yes or no") from None


def choice(*options: str) -> _Choice:
    return _Choice(options)


@dataclass(frozen=True)
class _Choice:
    options: tuple[str, ...]

    def __call__(self, text: str) -> str:
        value = text.strip().lower()
        if value not in self.options:
            raise ValueProblem("one of " + ", ".join(self.options))
        return value


def _whole_number(text: str, low: int, high: int, expected: str) -> int:
    value = text.strip()
    if not _WHOLE_NUMBER.fullmatch(value) or not low <= int(value) <= high:
        raise ValueProblem(expected)
    return int(value)


def positive_int(text: str) -> int:
    return _whole_number(
        text, 1, MAX_COUNT, f"a whole number greater than 0 and at most {MAX_COUNT}"
    )


def days(text: str) -> int:
    """A whole number of days, bounded as durations are (now minus it is a date)."""
    return _whole_number(
        text,
        1,
        MAX_DURATION_DAYS,
        f"a whole number greater than 0 and at most {MAX_DURATION_DAYS}",
    )


def port(text: str) -> int:
    return _whole_number(text, 1, 65535, "a TCP port from 1 to 65535")


def time_of_day(text: str) -> time:
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text.strip())
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueProblem("a time of day HH:MM such as 09:00")
    return time(int(match.group(1)), int(match.group(2)))


def timezone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueProblem("an IANA time zone such as UTC or Europe/Berlin") from None


def text_value(text: str) -> str:
    if not text.strip():
        raise ValueProblem("a non-empty value")
    return text.strip()


def optional_text(text: str) -> str | None:
    return text.strip() or None


def case_tag(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}", value):
        raise ValueProblem("a short tag of letters, digits, spaces, '.', '_' or '-' (at most 40)")
    return value


# `scheme://user:password@host`: what SQLAlchemy cannot parse may still carry a password.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*(?=@[^@\s]*(?:\s|$))")
# libpq, and so psycopg, also takes the password from the query string (`?password=`,
# `?sslpassword=`); `;` ends a pair too, so a value glued on with it is masked as well.
_QUERY_PAIR = re.compile(r"(?P<head>[?&;](?P<key>[^=&;\s]*)=)[^&;\s]*")
_SECRET_KEY = re.compile(r"pass|secret|pwd", re.IGNORECASE)


def mask_password(text: str) -> str:
    """`text` with every password in a URL in it replaced by `***` (SPEC 10: no secret in logs).

    Errors quote the value they refuse and `check-config` prints the storage URL, and
    its password must not reach stdout, stderr or the journal with them. The password
    before the `@` is masked up to the last `@` (an unencoded `@` in a password would
    otherwise leave its tail), and SQLAlchemy's parser catches whatever else it would
    read as one; in the query string, every key naming a password or secret (also
    percent-encoded) has its value masked.
    """
    masked = _URL_PASSWORD.sub(r"\g<head>***", text)
    try:
        url = make_url(masked.strip())
    except (ArgumentError, ValueError):
        pass
    else:
        if url.password is not None and url.password != "***":  # noqa: S105 (the mask itself)
            masked = url.render_as_string(hide_password=True)
    return _QUERY_PAIR.sub(_mask_query_value, masked)


def _mask_query_value(pair: re.Match[str]) -> str:
    if _SECRET_KEY.search(unquote_plus(pair.group("key"))):
        return pair.group("head") + "***"
    return pair.group(0)


def storage_url(text: str) -> str:
    expected = "an SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
    try:
        url = make_url(text.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueProblem(expected) from None
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ValueProblem(expected)
    if url.drivername.startswith("sqlite") and not url.database:
        raise ValueProblem(expected + " (an in-memory SQLite database would lose mail)")
    return text.strip()


def path_relative_to(base: Path) -> _PathParser:
    return _PathParser(base)


@dataclass(frozen=True)
class _PathParser:
    """Relative paths are taken from the configuration file's directory."""

    base: Path

    def __call__(self, text: str) -> Path:
        value = text.strip()
        if not value or "\0" in value:
            raise ValueProblem("a file path")
        return self.base / Path(value).expanduser()

    def optional(self, text: str) -> Path | None:
        return self(text) if text.strip() else None
