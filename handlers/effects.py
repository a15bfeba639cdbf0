"""Effects a handler returns as data; the shell executes all of one outcome in one transaction."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

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
    """A bounce: the outbox entry it answers failed; its author is told."""

    bounce_id: str | None
    message_ids: tuple[str, ...]


Effect = (
    OpenCase | AddParticipant | RecordIncoming | SendMail | UpdateCase | Audit | MarkOutboxFailed
)


@dataclass(frozen=True)
class Outcome:
    """What handling one message decided: the rule that placed it and the effects."""

    route: str  # report | case | command | moderate | bounce | postmaster | unfiled
    rule: str
    effects: tuple[Effect, ...]
    case: CaseRef | None = None
