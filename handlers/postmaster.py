"""Mail for postmaster@ of local and list domains goes to `[gateway] postmaster` (RFC 5321)."""

from __future__ import annotations

from datetime import datetime

from handlers.effects import Audit, Outcome, RecordIncoming, SendMail
from handlers.message import ParsedMessage
from handlers.snapshot import Snapshot


def forward(
    message: ParsedMessage,
    snapshot: Snapshot,
    domain: str,
    received: datetime,
) -> Outcome:
    team = snapshot.team
    copy = SendMail(
        case=None,
        recipient=team.postmaster,
        written=team.postmaster,
        kind="copy",
        template="postmaster-copy",
        params={
            "domain": domain,
            "case_tag": team.case_tag,
            "sender": message.from_written or message.loop.envelope_sender or "(none)",
            "subject": message.subject or "(no subject)",
            "received": received.isoformat(timespec="seconds"),
        },
        subject=f"postmaster@{domain}: {message.subject or '(no subject)'}",
        carries_original=True,
        via_name=message.from_name or message.from_written,
    )
    return Outcome(
        "postmaster",
        "postmaster",
        (
            RecordIncoming(None, "correspondence", "postmaster", message.from_address),
            copy,
            Audit(None, "postmaster-forwarded", None, {"domain": domain}),
        ),
    )
