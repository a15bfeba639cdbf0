"""Loop safety (RFC 3834, SPEC section 4): who gets no automatic reply, what is automatic."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

RATE_LIMIT_PER_HOUR = 5

# Reason ids for suppress_auto_reply, in the order they are checked (logged and audited).
NULL_SENDER = "null-sender"
MAILER_DAEMON = "mailer-daemon"
AUTO_SUBMITTED = "auto-submitted"
X_AUTOREPLY = "x-autoreply"
X_AUTORESPOND = "x-autorespond"
DSN = "dsn"
OUT_OF_OFFICE = "out-of-office"
PRECEDENCE_BULK = "precedence-bulk"  # also `list` and `junk`
LIST_ID = "list-id"

_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_COMMENT = re.compile(r"\([^()]*\)")
# Subject prefixes of out-of-office and vacation replies that carry no Auto-Submitted
# (Exchange and many webmailers send none), in the languages their clients ship.
# Anchored at the start: a report about "the out of office party" is not an autoreply.
_OUT_OF_OFFICE = re.compile(
    r"\s*\[?\s*(?:"
    r"out\s+of\s+(?:the\s+)?office|auto(?:matic)?[\s-]?(?:reply|response)"
    r"|auto:|vacation\s+(?:reply|message|notice)|away\s+from\s+(?:the\s+)?office"
    r"|abwesenheitsnotiz|automatische\s+antwort|abwesend"  # de
    r"|r[ée]ponse\s+automatique|absence\s+du\s+bureau|absent\s+du\s+bureau"  # fr
    r"|respuesta\s+autom[áa]tica|fuera\s+de\s+la\s+oficina"  # es
    r"|risposta\s+automatica|fuori\s+ufficio"  # it
    r"|resposta\s+autom[áa]tica|fora\s+do\s+escrit[óo]rio"  # pt
    r"|automatisch\s+antwoord|afwezig"  # nl
    r"|autosvar|automatiskt?\s+svar"  # sv, da, no
    r"|automaattinen\s+vastaus|poissa\s+toimistolta"  # fi
    r"|odpowied[źz]\s+automatyczna|automatick[áa]\s+odpov[ěe][ďd]"  # pl, cs
    r"|otomatik\s+yan[ıi]t"  # tr
    r"|автоматический\s+ответ|автоответ"  # ru
    r"|自动回复|自動回覆|自動返信|自動応答|자동\s*응답"  # zh, ja, ko
    r")(?!\w)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LoopFacts:
    """The few envelope and header values that loop safety looks at; None when absent.

    `envelope_sender` is the MAIL FROM (or, for IMAP and `ingest`, the Return-Path):
    None or "" is the null sender `<>`. Header values are decoded text, as
    `email.policy.default` gives them; for a repeated field pass the first.
    `content_type` is `maintype/subtype`; `report_type` its report-type parameter.
    """

    envelope_sender: str | None
    from_address: str | None = None
    auto_submitted: str | None = None
    precedence: str | None = None
    list_id: str | None = None
    x_autoreply: str | None = None
    x_autorespond: str | None = None
    content_type: str | None = None
    report_type: str | None = None
    subject: str | None = None


def _token(value: str) -> str:
    """`auto-replied; owner-email=x (vacation)` -> `auto-replied` (RFC 3834 section 5)."""
    return _COMMENT.sub("", value).partition(";")[0].strip().lower()


def _local_part(address: str | None) -> str:
    return (address or "").strip().strip("<>").rpartition("@")[0].lower()


def is_null_sender(facts: LoopFacts) -> bool:
    return not (facts.envelope_sender or "").strip().strip("<>").strip()


def is_auto_submitted(facts: LoopFacts) -> bool:
    """RFC 3834 section 5: any Auto-Submitted value but `no`, an empty one included."""
    return facts.auto_submitted is not None and _token(facts.auto_submitted) != "no"


def is_report(facts: LoopFacts) -> bool:
    return (facts.content_type or "").strip().lower() == "multipart/report"


def is_out_of_office(facts: LoopFacts) -> bool:
    if facts.subject is None:
        return False
    return _OUT_OF_OFFICE.match(unicodedata.normalize("NFC", facts.subject)) is not None


def _from_mailer_daemon(facts: LoopFacts) -> bool:
    senders = (_local_part(facts.envelope_sender), _local_part(facts.from_address))
    return "mailer-daemon" in senders


def _bulk(facts: LoopFacts) -> bool:
    return facts.precedence is not None and _token(facts.precedence) in _BULK_PRECEDENCE


# Checked in order; the first that holds is the reason recorded.
_SUPPRESSIONS: tuple[tuple[str, Callable[[LoopFacts], bool]], ...] = (
    (NULL_SENDER, is_null_sender),
    (MAILER_DAEMON, _from_mailer_daemon),
    (AUTO_SUBMITTED, is_auto_submitted),
    (X_AUTOREPLY, lambda facts: facts.x_autoreply is not None),
    (X_AUTORESPOND, lambda facts: facts.x_autorespond is not None),
    (DSN, is_report),
    (OUT_OF_OFFICE, is_out_of_office),
    (PRECEDENCE_BULK, _bulk),
    (LIST_ID, lambda facts: facts.list_id is not None),
)


def suppress_auto_reply(facts: LoopFacts) -> str | None:
    """Why this mail gets no acknowledgement or command result, or None when it may."""
    for reason, holds in _SUPPRESSIONS:
        if holds(facts):
            return reason
    return None


def is_automatic(facts: LoopFacts) -> bool:
    """Mail that never opens a case: it joins its thread silently or is kept unfiled.

    Precedence and List-Id are not signs of automatic mail (a report through a group
    alias carries them), and a null sender alone is not either (SPEC section 4). Any
    multipart/report is: read receipts and abuse reports are machine-made too.
    """
    return (
        is_auto_submitted(facts)
        or facts.x_autoreply is not None
        or facts.x_autorespond is not None
        or is_report(facts)
        or is_out_of_office(facts)
    )


def is_bounce(facts: LoopFacts, to_bounce_address: bool) -> bool:
    """A delivery status notification, or anything sent to a `conduct+bounce-ID@` address.

    A multipart/report counts unless its report-type names another kind of report
    (an RFC 8098 read receipt, an RFC 5965 abuse report); a missing one counts.
    """
    if to_bounce_address:
        return True
    if not is_report(facts):
        return False
    report_type = _token(facts.report_type or "")
    return report_type in ("", "delivery-status")


def rate_limit_allows(sent_in_last_hour: int, limit: int = RATE_LIMIT_PER_HOUR) -> bool:
    """Whether one more automatic reply may go to an address that got this many in an hour."""
    return sent_in_last_hour < limit
