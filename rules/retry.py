"""Outbound retry policy: back-off, reply-code classification and when to give up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Outcome = Literal["sent", "temporary", "permanent"]

# Where in an SMTP/LMTP exchange a reply came from. Only the mail transaction (MAIL,
# RCPT, DATA) speaks about the message; a refusal in the session (greeting, EHLO,
# STARTTLS, AUTH) is about the connection or our configuration, so it never fails a
# mail for good (as Postfix defers on a SASL failure rather than bouncing).
Phase = Literal["session", "rcpt", "transaction"]

BACKOFF_CAP = timedelta(hours=1)
# RFC 5321 section 4.5.4.1: give-up time "needs to be at least 4-5 days".
GIVE_UP_AFTER = timedelta(days=5)


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt came to; `detail` may quote the server (not for info logs)."""

    outcome: Outcome
    code: int | None = None
    detail: str = ""

    @classmethod
    def from_reply(
        cls, code: int | None, detail: str, phase: Phase = "transaction"
    ) -> DeliveryResult:
        return cls(classify(code, phase=phase), code, detail)


def classify(code: int | None, *, phase: Phase = "transaction") -> Outcome:
    """2xx sent, 5xx permanent, anything else (4xx, no reply at all) temporary."""
    if code is None:
        return "temporary"  # connection refused, dropped or timed out: try again
    if 200 <= code < 300:
        return "sent"
    if 500 <= code < 600 and phase == "transaction":
        return "permanent"
    if 500 <= code < 600 and phase == "rcpt":
        # RFC 5321 section 4.5.3.1.10: treat 552 after RCPT as 452 (too many recipients).
        return "temporary" if code == 552 else "permanent"
    return "temporary"


def next_attempt(
    attempts_so_far: int, first: timedelta, now: datetime, cap: timedelta = BACKOFF_CAP
) -> datetime:
    """When to try again after a failure: `first`, doubling per earlier failure, up to `cap`.

    `attempts_so_far` counts the failed attempts before this one (0 on the first failure).
    A `first` longer than `cap` is kept as it is: the operator asked for it.
    """
    delay = first
    for _ in range(max(attempts_so_far, 0)):
        if delay >= cap:
            break  # doubling further could overflow timedelta for no effect
        delay *= 2
    return now + min(delay, max(cap, first))


def expired(created_at: datetime, now: datetime, max_age: timedelta = GIVE_UP_AFTER) -> bool:
    """Whether mail owed since `created_at` has been retried long enough to give up."""
    return now - created_at >= max_age
