"""What a handler may know: configuration facts, the cases in question, threading facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from handlers.message import ParsedMessage
from rules.retention import Retention
from rules.threading import ThreadFacts

STAFF_ROLES = frozenset({"staff", "director"})


@dataclass(frozen=True)
class Person:
    name: str
    address: str  # normalised


@dataclass(frozen=True)
class Team:
    """The configured people and names; a handler never reads the configuration itself."""

    conduct_address: str
    case_tag: str
    staff: tuple[Person, ...]
    director: Person
    postmaster: str

    def is_staff(self, address: str | None) -> bool:
        return address is not None and any(p.address == address for p in self.staff)

    def is_director(self, address: str | None) -> bool:
        return address is not None and address == self.director.address

    def is_team(self, address: str | None) -> bool:
        """Staff or the executive director."""
        return self.is_staff(address) or self.is_director(address)


@dataclass(frozen=True)
class ParticipantView:
    address: str
    written: str
    name: str
    role: str
    recused: bool

    @property
    def kept_out(self) -> bool:
        """Out of the case as staff: recused, or a party to it (reporter, target, witness,
        accused). Only staff configured after the case opened can be both: the reporter's
        identity never reaches the accused (SPEC section 5), so they are kept out alike."""
        return self.recused or self.role not in STAFF_ROLES


@dataclass(frozen=True)
class CaseView:
    number: int
    status: str
    subject: str
    urgent: bool
    anonymous: bool
    assignee: str | None
    escalated: bool
    accused_notified: bool
    imported: bool
    created_at: datetime
    participants: tuple[ParticipantView, ...]
    # Sent to the executive director alone: staff are recused from it (SPEC section 3).
    director_only: bool = False

    def participant(self, address: str | None) -> ParticipantView | None:
        return next((p for p in self.participants if p.address == address), None)

    def with_role(self, *roles: str) -> tuple[ParticipantView, ...]:
        return tuple(p for p in self.participants if p.role in roles)

    def recused(self, address: str) -> bool:
        """Whether a staff member (or the director) is out of this case: no copies, notes,
        reminders or digest entries, and no commands; see ParticipantView.kept_out."""
        found = self.participant(address)
        return found is not None and found.kept_out


@dataclass(frozen=True)
class Signed:
    """A signed recipient address whose token the shell verified, and whose token it is."""

    case: int
    owner: str  # the normalised participant address the token was made for


@dataclass(frozen=True)
class Policy:
    """Configuration facts the command handlers decide by."""

    zone: tzinfo
    lists: tuple[str, ...]
    list_domains: tuple[str, ...]
    moderators: Mapping[str, tuple[str, ...]]
    local_domains: tuple[str, ...]
    require_dkim: bool
    retention: Retention

    def serves(self, list_address: str) -> bool:
        return list_address in self.lists or list_address.rpartition("@")[2] in self.list_domains

    def moderated_by(self, address: str) -> tuple[str, ...]:
        return tuple(
            lst for lst, people in self.moderators.items() if address in (p.lower() for p in people)
        )


@dataclass(frozen=True)
class HistoryItem:
    """One filed message of a case, for the summary `#escalate` sends."""

    kind: str
    sender: str | None
    at: datetime
    text: str


@dataclass(frozen=True)
class PendingConfirmation:
    """An unused, unexpired confirmation found by the token the mail was sent to."""

    id: int
    sender: str
    commands: str
    request: ParsedMessage | None = None  # the mail that asked (#on-behalf files it)
    request_inbox_id: int | None = None


@dataclass(frozen=True)
class BouncedMail:
    """The outbox entry a bounce answers: found by its bounce ID, or a DSN's Message-IDs."""

    outbox_id: int
    bounce_id: str | None
    case: int | None
    kind: str
    recipient: str
    caused_by: str | None
    message_id: str
    created_at: datetime


@dataclass(frozen=True)
class Snapshot:
    team: Team
    threading: ThreadFacts
    cases: Mapping[int, CaseView] = field(default_factory=dict)
    signed: Signed | None = None
    # Automatic replies already owed to an address in the last hour (RFC 3834 limit).
    automatic_replies: Mapping[str, int] = field(default_factory=dict)
    policy: Policy | None = None
    dkim_passed: bool = False
    history: tuple[HistoryItem, ...] = ()
    # End of each of the signed case's bans in force (None: a ban without end).
    ban_ends: tuple[datetime | None, ...] = ()
    confirmation: PendingConfirmation | None = None
    bounced: BouncedMail | None = None  # the case it is about, if any, is in `cases`
