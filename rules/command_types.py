"""The staff commands of SPEC section 5 as typed values, one frozen dataclass per command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import ClassVar, TypeAlias

ALL_LISTS = "all"


class CommandName(Enum):
    """Command names as written after `#`, lower case."""

    STATUS = "status"
    ASSIGN = "assign"
    URGENT = "urgent"
    ANONYMOUS = "anonymous"
    ACCUSED = "accused"
    PARTICIPANT = "participant"
    REPLY = "reply"
    TO = "to"
    NOTIFY_ACCUSED = "notify-accused"
    ESCALATE = "escalate"
    BAN = "ban"
    UNBAN = "unban"
    SANCTION = "sanction"
    REMIND = "remind"
    RECUSE = "recuse"
    RELEASE = "release"
    DISCARD = "discard"
    MERGE = "merge"
    ON_BEHALF = "on-behalf"
    ACK = "ack"
    CLOSE = "close"


class SettableStatus(Enum):
    """The statuses `#status` sets; `closed` comes only from `#close`."""

    NEW = "new"
    INVESTIGATING = "investigating"
    WAITING = "waiting"
    RESOLVED = "resolved"


class ParticipantRole(Enum):
    """The roles `#participant` adds."""

    TARGET = "target"
    WITNESS = "witness"


class SanctionKind(Enum):
    WARNING = "warning"
    NO_CONTACT = "no-contact"
    LIST_BAN = "list-ban"
    END_ROLE = "end-role"
    LEAVE_EVENT = "leave-event"
    EVENT_BAN = "event-ban"
    REMOVE_MEMBERSHIP = "remove-membership"


class Outcome(Enum):
    """The outcome class `#close` records; it sets the retention (SPEC section 7a)."""

    NO_VIOLATION = "no-violation"
    RESOLVED = "resolved"
    FLAGGED = "flagged"
    BANNED = "banned"


class BanScope(Enum):
    """Which lists a `#ban`/`#unban` names.

    DEFAULT is no `list=`: all lists for staff, a moderator's own lists for a
    moderator, who is refused ALL (`list=all`).
    """

    DEFAULT = "default"
    ALL = "all"
    LIST = "list"


@dataclass(frozen=True)
class Status:
    name: ClassVar[CommandName] = CommandName.STATUS
    status: SettableStatus


@dataclass(frozen=True)
class Assign:
    """`address` is lower-cased; `me` is already the sender."""

    name: ClassVar[CommandName] = CommandName.ASSIGN
    address: str


@dataclass(frozen=True)
class Urgent:
    name: ClassVar[CommandName] = CommandName.URGENT
    on: bool


@dataclass(frozen=True)
class Anonymous:
    """`on=False` (`#anonymous off`): the reporter agreed to be named to the accused."""

    name: ClassVar[CommandName] = CommandName.ANONYMOUS
    on: bool


@dataclass(frozen=True)
class Accused:
    """`address` lower-cased; `written` as the command spelled it (to send mail to)."""

    name: ClassVar[CommandName] = CommandName.ACCUSED
    address: str
    written: str


@dataclass(frozen=True)
class Participant:
    name: ClassVar[CommandName] = CommandName.PARTICIPANT
    address: str
    written: str
    role: ParticipantRole


@dataclass(frozen=True)
class Reply:
    name: ClassVar[CommandName] = CommandName.REPLY


@dataclass(frozen=True)
class To:
    name: ClassVar[CommandName] = CommandName.TO
    address: str
    written: str


@dataclass(frozen=True)
class NotifyAccused:
    name: ClassVar[CommandName] = CommandName.NOTIFY_ACCUSED


@dataclass(frozen=True)
class Escalate:
    name: ClassVar[CommandName] = CommandName.ESCALATE


@dataclass(frozen=True)
class Ban:
    """`pattern` as written, unvalidated; `list_address` lower-cased, set only for LIST."""

    name: ClassVar[CommandName] = CommandName.BAN
    pattern: str
    scope: BanScope
    list_address: str | None
    until: datetime | None
    reason: str | None


@dataclass(frozen=True)
class Unban:
    """Exactly one of `pattern` (has `@` or starts `re:`) and `ban_id` is set."""

    name: ClassVar[CommandName] = CommandName.UNBAN
    pattern: str | None
    ban_id: str | None
    scope: BanScope
    list_address: str | None


@dataclass(frozen=True)
class Sanction:
    name: ClassVar[CommandName] = CommandName.SANCTION
    kind: SanctionKind
    until: datetime | None
    note: str


@dataclass(frozen=True)
class Remind:
    name: ClassVar[CommandName] = CommandName.REMIND
    at: datetime
    note: str


@dataclass(frozen=True)
class Recuse:
    name: ClassVar[CommandName] = CommandName.RECUSE


@dataclass(frozen=True)
class Release:
    name: ClassVar[CommandName] = CommandName.RELEASE
    held_id: str


@dataclass(frozen=True)
class Discard:
    name: ClassVar[CommandName] = CommandName.DISCARD
    held_id: str


@dataclass(frozen=True)
class Merge:
    """Fold case `case` into the case the command was sent to."""

    name: ClassVar[CommandName] = CommandName.MERGE
    case: int


@dataclass(frozen=True)
class OnBehalf:
    name: ClassVar[CommandName] = CommandName.ON_BEHALF
    address: str
    written: str


@dataclass(frozen=True)
class Ack:
    name: ClassVar[CommandName] = CommandName.ACK


@dataclass(frozen=True)
class Close:
    name: ClassVar[CommandName] = CommandName.CLOSE
    outcome: Outcome
    note: str


Command: TypeAlias = (
    Status
    | Assign
    | Urgent
    | Anonymous
    | Accused
    | Participant
    | Reply
    | To
    | NotifyAccused
    | Escalate
    | Ban
    | Unban
    | Sanction
    | Remind
    | Recuse
    | Release
    | Discard
    | Merge
    | OnBehalf
    | Ack
    | Close
)
