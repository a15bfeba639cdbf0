"""The words of one command line: quoting, `key=value` options, addresses and times."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, timedelta, tzinfo

from rules.durations import DATE_EXPECTED, DURATION_EXPECTED, BadValue, parse_date, parse_duration
from rules.errors import GatewayError

_SPACE = " \t"
_QUOTES = "\"'"
_OPTION = re.compile(r"([A-Za-z]+)=")
# Only the shape local@domain: full normalisation (IDNA, subaddresses) is the caller's.
_ADDRESS = re.compile(r"[^@\s<>\"',;()]+@[^@\s<>\"',;()]+")


class BadArgument(GatewayError):
    """Why the arguments of one command line are refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Words:
    """A cursor over the arguments of one command line, read a word at a time.

    Words are separated by spaces or tabs; double or single quotes group, also
    inside a word (`reason="spam and abuse"`), and an unbalanced one is refused.
    Backslashes are literal, so `re:` patterns keep theirs.
    """

    def __init__(self, line: str, start: int = 0) -> None:
        self._line = line
        self._pos = start

    def at_end(self) -> bool:
        self._skip_space()
        return self._pos >= len(self._line)

    def next(self) -> str | None:
        """The next word without its quotes, or None at the end of the line."""
        if self.at_end():
            return None
        line, pos, parts = self._line, self._pos, []
        while pos < len(line) and line[pos] not in _SPACE:
            if line[pos] in _QUOTES:
                close = line.find(line[pos], pos + 1)
                if close < 0:
                    raise BadArgument(f"unbalanced {line[pos]} quote")
                parts.append(line[pos + 1 : close])
                pos = close + 1
                continue
            end = pos
            while end < len(line) and line[end] not in _SPACE and line[end] not in _QUOTES:
                end += 1
            parts.append(line[pos:end])
            pos = end
        self._pos = pos
        return "".join(parts)

    def peek(self) -> str | None:
        """The next word without reading it; None at the end or when it does not parse."""
        start = self._pos
        try:
            return self.next()
        except BadArgument:
            return None
        finally:
            self._pos = start

    def require(self, expected: str) -> str:
        """The next word, which must be there and not empty."""
        word = self.next()
        if not word:
            raise BadArgument(f"expected {expected}")
        return word

    def finish(self) -> None:
        """Refuse anything left on the line."""
        if not self.at_end():
            raise BadArgument(f"unexpected {self._line[self._pos :].strip()!r}")

    def option_follows(self, keys: Collection[str]) -> bool:
        """Whether the next word, as written, is one of the `key=` options."""
        self._skip_space()
        match = _OPTION.match(self._line, self._pos)
        return match is not None and match.group(1).lower() in keys

    def rest(self) -> str:
        """Free text to the end of the line; one fully quoted word loses its quotes."""
        self._skip_space()
        raw = self._line[self._pos :].rstrip()
        self._pos = len(self._line)
        if raw and raw[0] in _QUOTES:
            inner = Words(raw)
            try:
                word = inner.next()
            except BadArgument:
                return raw
            if word is not None and inner.at_end():
                return word
        return raw

    def _skip_space(self) -> None:
        while self._pos < len(self._line) and self._line[self._pos] in _SPACE:
            self._pos += 1


def read_options(words: Words, keys: Collection[str], *, until_other: bool) -> dict[str, str]:
    """`key=value` options by lower-cased key.

    With `until_other`, reading stops at the first word that is not an option
    (free text follows); otherwise every remaining word must be one.
    """
    options: dict[str, str] = {}
    while not words.at_end():
        if until_other and not words.option_follows(keys):
            break
        word = words.require("an option")
        key, equals, value = word.partition("=")
        key = key.lower()
        if not equals or key not in keys:
            expected = ", ".join(f"{name}=" for name in keys)
            raise BadArgument(f"unexpected {word!r}; expected {expected}")
        if key in options:
            raise BadArgument(f"{key}= given twice")
        options[key] = value
    return options


def address(word: str) -> str:
    """The address as written (angle brackets dropped); refuses what is not local@domain."""
    written = word[1:-1] if word.startswith("<") and word.endswith(">") else word
    if _ADDRESS.fullmatch(written) is None:
        raise BadArgument(f"{word!r} is not an address local@domain")
    return written


def until_from(options: dict[str, str], *, now: datetime, zone: tzinfo) -> datetime | None:
    """The end given by `for=DURATION` or `until=DATE` (exclusive), or None for no end."""
    if "for" in options and "until" in options:
        raise BadArgument("for= and until= are exclusive; give one")
    if "for" in options:
        return now + _duration(options["for"], "for=")
    if "until" in options:
        return _future_date(options["until"], "until=", now=now, zone=zone)
    return None


def when(word: str, *, now: datetime, zone: tzinfo) -> datetime:
    """A time given as a duration from now or a future date."""
    try:
        return now + _duration(word, "")
    except BadArgument:
        pass
    try:
        day = parse_date(word, zone)
    except BadValue:
        raise BadArgument(f"{word!r}: expected {DURATION_EXPECTED}, or {DATE_EXPECTED}") from None
    return _in_future(day, word, now=now)


def _duration(text: str, label: str) -> timedelta:
    try:
        length = parse_duration(text)
    except BadValue as error:
        raise BadArgument(f"{label}{error}") from None
    if not length:
        raise BadArgument(f"{label}{text} is no time at all")
    return length


def _future_date(text: str, label: str, *, now: datetime, zone: tzinfo) -> datetime:
    try:
        day = parse_date(text, zone)
    except BadValue as error:
        raise BadArgument(f"{label}{error}") from None
    return _in_future(day, f"{label}{text}", now=now)


def _in_future(moment: datetime, written: str, *, now: datetime) -> datetime:
    if moment <= now:
        raise BadArgument(f"{written} is not in the future")
    return moment
