"""A typed wrapper over google-re2: pattern checks, single full matches and a full-match set."""

from __future__ import annotations

import re
from typing import Any

import re2

from rules.errors import GatewayError

# RE2's default 8 MiB budget cannot compile a set of about 10,000 ban regexes, and a
# DFA that runs out of memory at match time reports "no match" (letting a post through).
_SET_MAX_MEM = 128 * 1024 * 1024
_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


class BadRegex(GatewayError):
    """A pattern RE2 refuses (backreferences, lookaround, bad syntax)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"RE2 refuses {pattern!r}: {reason}")
        self.pattern = pattern
        self.reason = reason


class RegexSetError(GatewayError):
    """A set used out of order, or one RE2 cannot compile."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"regex set: {reason}")
        self.reason = reason


def _options(max_mem: int | None = None) -> Any:
    options = re2.Options()
    # Refusals are reported through BadRegex; RE2 would also print them to stderr.
    options.log_errors = False
    if max_mem is not None:
        options.max_mem = max_mem
    return options


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raise BadRegex(pattern, _reason(exc)) from None


def check_pattern(pattern: str) -> None:
    """Raise BadRegex, with RE2's reason, when RE2 refuses the pattern."""
    _compile(pattern)


def full_match(pattern: str, text: str) -> bool:
    """Whether the pattern matches the whole text."""
    return _compile(pattern).fullmatch(text) is not None


def escape(text: str) -> str:
    """The text as an RE2 pattern matching exactly itself; only metacharacters are escaped."""
    # re2.escape escapes every non-word character, which makes imported patterns unreadable.
    return _META.sub(r"\\\1", text)


class FullMatchSet:
    """Many patterns matched against the whole text in one pass: add, compile, then match."""

    def __init__(self) -> None:
        self._set: Any = re2.Set.FullMatchSet(_options(_SET_MAX_MEM))
        self._size = 0
        self._compiled = False

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str) -> int:
        """Add a pattern; its index is what `match` reports. Raises BadRegex."""
        if self._compiled:
            raise RegexSetError("cannot add a pattern after compile()")
        # Set.Add only says "failed"; a single compile gives RE2's reason.
        check_pattern(pattern)
        try:
            index = int(self._set.Add(pattern))
        except re2.error as exc:
            raise BadRegex(pattern, _reason(exc)) from None
        self._size += 1
        return index

    def compile(self) -> None:
        """Freeze the set; required before `match`."""
        if self._compiled:
            return
        try:
            self._set.Compile()
        except re2.error as exc:
            raise RegexSetError(f"RE2 cannot compile the set: {_reason(exc)}") from None
        self._compiled = True

    def match(self, text: str) -> list[int]:
        """Indexes of every pattern that matches the whole text, ascending."""
        if not self._compiled:
            raise RegexSetError("match() before compile()")
        if self._size == 0:
            return []
        found = self._set.Match(text)
        return sorted(int(index) for index in found) if found else []
