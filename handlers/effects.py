"""Effects a handler returns as data; the shell executes all of one outcome in one transaction."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from rules.retention import Retention

# A case is either one that exists, or the one this outcome opens.
NEW: Final = "new"
CaseRef = int | Literal["new"]


class Envelope(enum.Enum):
    """RFC 3834: automatic answers go out with `<>`; everything else with a bounce address."""

    NULL = "null"
    BOUNCE = "bounce"


@dataclass(frozen=True)
class OpenCase:
    subject: str
    urgent: bool
    possibly_related: int | None = None
    imported: bool = False
    status: str = "new"
    director_only: bool = False  # the executive director alone handles it


@dataclass(frozen=True)
class AddParticipant:
    case: CaseRef
    address: str
    written: str
    name: str
    role: str
    recused: bool = False


@dataclass(frozen=True)
class RecordIncoming:
    """The message being handled, filed on a case (or unfiled when case is None)."""

    case: CaseRef | None
    kind: str  # report | correspondence | note | command | bounce | auto-reply
    rule: str
    party: str | None


@dataclass(frozen=True)
class SendMail:
    """One mail to one recipient; the shell composes, signs Reply-To and queues it."""

    case: CaseRef | None
    recipient: str  # normalised: the thread and the signed address are made for it
    written: str  # the address as the person wrote it: where the mail goes
    kind: str  # acknowledgement | copy | note | reply | notification | reminder | result
    template: str
    params: Mapping[str, str] = field(default_factory=dict)
    subject: str | None = None  # None: the fixed text for non-staff
    envelope: Envelope = Envelope.BOUNCE
    carries_original: bool = False  # attach the incoming message as message/rfc822
    via_name: str | None = None  # a copy of someone's mail: "<name> via <tag>"
    automatic: bool = False  # counts against the 5-an-hour limit
    auto_submitted: str = "auto-generated"
    caused_by: str | None = None
    references_incoming: bool = False
    reply_to_confirmation: bool = False  # Reply-To the token CreateConfirmation made


@dataclass(frozen=True)
class UpdateCase:
    case: CaseRef
    changes: Mapping[str, object]


@dataclass(frozen=True)
class Audit:
    case: CaseRef | None
    action: str
    actor: str | None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class MarkOutboxFailed:
    """A DSN reported this outbox entry failed; the notices are SendMail effects beside it."""

    outbox_id: int
    case: int | None
    status: str  # the DSN's Status and Diagnostic-Code, recorded as the entry's last error


@dataclass(frozen=True)
class Origin:
    """The command line an effect came from: named when the shell refuses the effect."""

    line: int
    text: str


@dataclass(frozen=True)
class SetRecused:
    case: CaseRef
    address: str


@dataclass(frozen=True)
class AddBan:
    case: CaseRef | None
    pattern: str  # canonical text, already validated by the handler
    list_address: str | None
    until: datetime | None
    reason: str | None
    created_by: str
    interim: bool
    origin: Origin | None = None


@dataclass(frozen=True)
class LiftBan:
    """By id, or by pattern and scope; the shell refuses an unknown one."""

    ban_id: int | None
    pattern: str | None
    list_address: str | None
    by: str
    allowed_lists: tuple[str, ...] | None = None  # a moderator's lists; None: any
    origin: Origin | None = None
    # Lifting ends the ban: a closed case waiting for its end gets its expunge date.
    retention: Retention | None = None


@dataclass(frozen=True)
class AddSanction:
    case: CaseRef
    kind: str
    until: datetime | None
    note: str
    by: str


@dataclass(frozen=True)
class AddTimer:
    case: CaseRef | None
    kind: str  # remind | sanction-end | ban-end | ...
    due: datetime
    recipient: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class DecideHeld:
    held_id: str
    release: bool
    by: str
    allowed_lists: tuple[str, ...] | None = None
    origin: Origin | None = None


@dataclass(frozen=True)
class MergeCase:
    source: int
    into: CaseRef
    origin: Origin | None = None
    by: str | None = None  # refused unless they may see the source case
    by_director: bool = False  # `by` is the executive director, who alone sees their cases


@dataclass(frozen=True)
class ExtendRetention:
    """Earlier cases naming these accused keep their data at least until `until`
    (None: while the closing case's own date is open, theirs is open too)."""

    case: CaseRef
    accused: tuple[str, ...]
    until: datetime | None


@dataclass(frozen=True)
class CreateConfirmation:
    """Pending commands from conduct+moderate@; the shell makes the single-use token."""

    sender: str
    commands: str
    expires: datetime


@dataclass(frozen=True)
class UseConfirmation:
    confirmation_id: int


@dataclass(frozen=True)
class FileRequest:
    """`#on-behalf`: the confirmed request, kept unfiled until now, becomes the case's report.

    `party` is its thread: the staff member's, so the reporter's mail never references it.
    """

    case: CaseRef
    text: str
    party: str


Effect = (
    OpenCase
    | AddParticipant
    | RecordIncoming
    | SendMail
    | UpdateCase
    | Audit
    | MarkOutboxFailed
    | SetRecused
    | AddBan
    | LiftBan
    | AddSanction
    | AddTimer
    | DecideHeld
    | MergeCase
    | ExtendRetention
    | CreateConfirmation
    | UseConfirmation
    | FileRequest
)


@dataclass(frozen=True)
class Outcome:
    """What handling one message decided: the rule that placed it and the effects."""

    route: str  # report | case | command | moderate | bounce | postmaster | unfiled
    rule: str
    effects: tuple[Effect, ...]
    case: CaseRef | None = None


# The message kinds of SPEC section 9. Outbox rows keep the finer kind that says why a
# mail was sent (acknowledgement, copy, result, ...); a case's messages use SPEC's words.
MESSAGE_KINDS = frozenset(
    {
        "report",
        "correspondence",
        "note",
        "command",
        "reply",
        "notification",
        "reminder",
        "bounce",
        "auto-reply",
    }
)
_OUTBOX_TO_MESSAGE = {
    "acknowledgement": "auto-reply",
    "copy": "notification",
    "result": "notification",
    "bounce-notice": "notification",
}


def message_kind(outbox_kind: str) -> str:
    kind = _OUTBOX_TO_MESSAGE.get(outbox_kind, outbox_kind)
    return kind if kind in MESSAGE_KINDS else "notification"
