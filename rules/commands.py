"""Staff commands (SPEC section 5): the `#` lines at the top of a message, parsed all or nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import Enum
from typing import TypeVar

from rules import command_types as ct
from rules import command_words as cw
from rules.addresses import AddressError, normalise, normalise_list
from rules.errors import GatewayError

COMMAND_NAMES: tuple[str, ...] = tuple(name.value for name in ct.CommandName)

_NAME = re.compile(r"#(\S*)")
_TIME_KEYS = ("for", "until")
_BAN_KEYS = ("list", "for", "until", "reason")
_OUTGOING = (ct.Reply, ct.To, ct.NotifyAccused)
_MODERATOR_COMMANDS = (ct.Ban, ct.Unban, ct.Release, ct.Discard)
_OUTCOMES = {outcome.value: outcome for outcome in ct.Outcome}
_E = TypeVar("_E", bound=Enum)


class CommandError(GatewayError):
    """The first command line that is refused: its 1-based number among the command lines."""

    def __init__(self, line: int, text: str, reason: str) -> None:
        super().__init__(f"line {line}: {text}: {reason}")
        self.line = line
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class ParsedCommands:
    """Every command of a message, with its line as written, and the text below them."""

    commands: tuple[ct.Command, ...]
    lines: tuple[str, ...]
    text: str

    @property
    def outgoing(self) -> ct.Reply | ct.To | ct.NotifyAccused | None:
        """The command that sends `text` to someone, always the last one."""
        last = self.commands[-1] if self.commands else None
        return last if isinstance(last, ct.Reply | ct.To | ct.NotifyAccused) else None

    @property
    def on_behalf(self) -> ct.OnBehalf | None:
        first = self.commands[0] if self.commands else None
        return first if isinstance(first, ct.OnBehalf) else None

    @property
    def acknowledge(self) -> bool:
        """`#ack` followed `#on-behalf`."""
        return any(isinstance(command, ct.Ack) for command in self.commands)


def moderator_allowed(command: ct.Command) -> bool:
    """Moderators may only ban, unban, release and discard (SPEC section 5)."""
    return isinstance(command, _MODERATOR_COMMANDS)


def parse_commands(
    new_text: str, *, sender: str, tz: tzinfo, now: datetime
) -> ParsedCommands | CommandError:
    """All the commands at the top of `new_text`, or the first line that fails.

    Lines are numbered among the command lines only (blank lines between them
    are skipped). `now` must be timezone-aware; `for=` ends are `now` plus the
    duration, and dates are 00:00 in `tz`.
    """
    lines, text = _split(new_text)
    context = _Context(sender=sender.lower(), zone=tz, now=now)
    commands: list[ct.Command] = []
    for number, line in enumerate(lines, start=1):
        try:
            command = _parse_line(line, context)
            _check_place(command, number, commands[-1] if commands else None)
        except cw.BadArgument as error:
            return CommandError(number, line, error.reason)
        commands.append(command)
    if commands and isinstance(commands[-1], _OUTGOING) and not text.strip():
        name = commands[-1].name.value
        return CommandError(len(lines), lines[-1], f"#{name} needs text below the command lines")
    return ParsedCommands(tuple(commands), tuple(lines), text)


@dataclass(frozen=True)
class _Context:
    sender: str
    zone: tzinfo
    now: datetime


def _split(new_text: str) -> tuple[list[str], str]:
    body = new_text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    commands: list[str] = []
    end = len(body)
    for index, line in enumerate(body):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            end = index
            break
        if stripped:
            commands.append(stripped)
    return commands, "\n".join(body[end:]).rstrip()


def _parse_line(line: str, context: _Context) -> ct.Command:
    match = _NAME.match(line)
    assert match is not None  # _split keeps only lines that start with "#"
    if not match.group(1):
        raise cw.BadArgument("no command name after #")
    try:
        name = ct.CommandName(match.group(1).lower())
    except ValueError:
        raise cw.BadArgument(f"unknown command #{match.group(1)}") from None
    return _PARSERS[name](cw.Words(line, match.end()), context)


def _check_place(command: ct.Command, number: int, previous: ct.Command | None) -> None:
    if isinstance(command, ct.OnBehalf) and number != 1:
        raise cw.BadArgument("#on-behalf must be the first line")
    if isinstance(command, ct.Ack) and not (number == 2 and isinstance(previous, ct.OnBehalf)):
        raise cw.BadArgument("#ack must directly follow #on-behalf")
    # Checking only the previous command suffices: an outgoing one never has a successor.
    if isinstance(previous, _OUTGOING):
        if isinstance(command, _OUTGOING):
            raise cw.BadArgument("only one of #reply, #to and #notify-accused per message")
        raise cw.BadArgument("#reply, #to and #notify-accused must be the last command")


def _choice(enum: type[_E], word: str, what: str) -> _E:
    for member in enum:
        if member.value == word.lower():
            return member
    expected = "|".join(str(member.value) for member in enum)
    raise cw.BadArgument(f"{word!r} is not a {what}; expected {expected}")


def _switch(words: cw.Words) -> bool:
    word = words.next()
    words.finish()
    if word is None:
        return True
    if word.lower() != "off":
        raise cw.BadArgument(f"unexpected {word!r}; expected nothing or off")
    return False


# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, brackets included.
MAX_ADDRESS_LENGTH = 254


def _normalised(written: str) -> str:
    """As participants, staff and bans are compared (SPEC section 6): a subaddress, BATV
    tag or Unicode domain must not get an address past a staff or recipient check."""
    if len(written) > MAX_ADDRESS_LENGTH:
        # Nothing can deliver to it, and the database keeps addresses in 320 characters.
        raise cw.BadArgument(
            f"{written[:40]!r}… is longer than an address can be ({MAX_ADDRESS_LENGTH} characters)"
        )
    try:
        return normalise(written)
    except AddressError as error:
        raise cw.BadArgument(
            f"{written!r} is not an address local@domain ({error.reason})"
        ) from None


def _addressed(words: cw.Words) -> tuple[str, str]:
    written = cw.address(words.require("an address"))
    return _normalised(written), written


def _no_arguments(build: Callable[[], ct.Command]) -> Callable[[cw.Words, _Context], ct.Command]:
    def parse(words: cw.Words, _context: _Context) -> ct.Command:
        words.finish()
        return build()

    return parse


def _status(words: cw.Words, _context: _Context) -> ct.Command:
    status = _choice(ct.SettableStatus, words.require("a status"), "status")
    words.finish()
    return ct.Status(status)


def _assign(words: cw.Words, context: _Context) -> ct.Command:
    word = words.require("an address or me")
    words.finish()
    return ct.Assign(context.sender if word.lower() == "me" else _normalised(cw.address(word)))


def _participant(words: cw.Words, _context: _Context) -> ct.Command:
    address, written = _addressed(words)
    role = _choice(ct.ParticipantRole, words.require("target or witness"), "role")
    words.finish()
    return ct.Participant(address, written, role)


def _addressee(
    build: Callable[[str, str], ct.Command],
) -> Callable[[cw.Words, _Context], ct.Command]:
    def parse(words: cw.Words, _context: _Context) -> ct.Command:
        address, written = _addressed(words)
        words.finish()
        return build(address, written)

    return parse


def _scope(options: dict[str, str]) -> tuple[ct.BanScope, str | None]:
    if "list" not in options:
        return ct.BanScope.DEFAULT, None
    value = options["list"].strip().lower()
    if not value:
        raise cw.BadArgument("list= needs a list address or all")
    if value == ct.ALL_LISTS:
        return ct.BanScope.ALL, None
    try:  # as routing names the list, so `list=dev@bücher.example` scopes the ban right
        return ct.BanScope.LIST, normalise_list(value)
    except AddressError:
        return ct.BanScope.LIST, value  # refused later as a list this gateway does not serve


def _ban(words: cw.Words, context: _Context) -> ct.Command:
    pattern = words.require("a pattern")
    options = cw.read_options(words, _BAN_KEYS, until_other=False)
    scope, list_address = _scope(options)
    until = cw.until_from(options, now=context.now, zone=context.zone)
    return ct.Ban(pattern, scope, list_address, until, options.get("reason") or None)


def _unban(words: cw.Words, _context: _Context) -> ct.Command:
    target = words.require("a pattern or ban id")
    scope, list_address = _scope(cw.read_options(words, ("list",), until_other=False))
    if target.lower().startswith("re:") or "@" in target:
        return ct.Unban(target, None, scope, list_address)
    return ct.Unban(None, target, scope, list_address)


def _sanction(words: cw.Words, context: _Context) -> ct.Command:
    kind = _choice(ct.SanctionKind, words.require("a sanction kind"), "sanction kind")
    options = cw.read_options(words, _TIME_KEYS, until_other=True)
    until = cw.until_from(options, now=context.now, zone=context.zone)
    return ct.Sanction(kind, until, words.rest())


def _remind(words: cw.Words, context: _Context) -> ct.Command:
    at = cw.when(words.require("a duration or date"), now=context.now, zone=context.zone)
    return ct.Remind(at, words.rest())


def _held(build: Callable[[str], ct.Command]) -> Callable[[cw.Words, _Context], ct.Command]:
    def parse(words: cw.Words, _context: _Context) -> ct.Command:
        held_id = words.require("a held post's id")
        words.finish()
        return build(held_id)

    return parse


def _merge(words: cw.Words, _context: _Context) -> ct.Command:
    word = words.require("a case number")
    words.finish()
    if not (word.isascii() and word.isdigit()) or len(word) > 9 or int(word) < 1:
        raise cw.BadArgument(f"{word!r} is not a case number")
    return ct.Merge(int(word))


def _close(words: cw.Words, _context: _Context) -> ct.Command:
    first = words.peek()
    outcome = _OUTCOMES.get(first.lower()) if first is not None else None
    if outcome is None:
        return ct.Close(ct.Outcome.RESOLVED, words.rest())
    words.next()
    return ct.Close(outcome, words.rest())


_PARSERS: dict[ct.CommandName, Callable[[cw.Words, _Context], ct.Command]] = {
    ct.CommandName.STATUS: _status,
    ct.CommandName.ASSIGN: _assign,
    ct.CommandName.URGENT: lambda words, _context: ct.Urgent(_switch(words)),
    ct.CommandName.ANONYMOUS: lambda words, _context: ct.Anonymous(_switch(words)),
    ct.CommandName.ACCUSED: _addressee(ct.Accused),
    ct.CommandName.PARTICIPANT: _participant,
    ct.CommandName.REPLY: _no_arguments(ct.Reply),
    ct.CommandName.TO: _addressee(ct.To),
    ct.CommandName.NOTIFY_ACCUSED: _no_arguments(ct.NotifyAccused),
    ct.CommandName.ESCALATE: _no_arguments(ct.Escalate),
    ct.CommandName.BAN: _ban,
    ct.CommandName.UNBAN: _unban,
    ct.CommandName.SANCTION: _sanction,
    ct.CommandName.REMIND: _remind,
    ct.CommandName.RECUSE: _no_arguments(ct.Recuse),
    ct.CommandName.RELEASE: _held(ct.Release),
    ct.CommandName.DISCARD: _held(ct.Discard),
    ct.CommandName.MERGE: _merge,
    ct.CommandName.ON_BEHALF: _addressee(ct.OnBehalf),
    ct.CommandName.ACK: _no_arguments(ct.Ack),
    ct.CommandName.CLOSE: _close,
}
