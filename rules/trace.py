"""The one `Received:` trace field the gateway adds to a relayed post (RFC 5321 section 4.4)."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from email.utils import format_datetime

# RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters (CRLF excluded).
FOLD_AT = 78
HELO_LIMIT = 64  # a HELO name is the client's claim; keep enough to recognise it, no more
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")  # keeps domains and address literals
_UNSAFE_ATOM = re.compile(r"[^A-Za-z0-9.\-_]")
_UNSAFE_MAILBOX = re.compile(r"[\x00-\x20\x7f<>()\\;]")


def received_field(
    *,
    from_helo: str,
    from_ip: str,
    by_host: str,
    protocol: str,
    queue_id: str | None,
    recipient: str | None,
    now: datetime,
) -> bytes:
    """`Received: from HELO ([IP]) by HOST with PROTO id ID for <RCPT>; DATE`, folded, CRLF-ended.

    `recipient` is the RFC 5321 FOR clause: pass it only when the transaction has exactly
    one recipient. With several, naming one (or all) in a copy every subscriber gets tells
    them who else received it, so the clause is left out (RFC 5321 section 7.2).
    `from_helo` is whatever the client said: every character that could end a clause,
    start a comment or break the line is replaced, and it is cut at HELO_LIMIT.
    `now` must be timezone-aware; the date is RFC 5322 (`Tue, 07 May 2030 09:30:00 +0000`).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("received_field needs a timezone-aware `now`")
    clauses = [f"from {_helo(from_helo)} ({_address_literal(from_ip)})"]
    clauses.append(f"by {_name(by_host, limit=253)}")
    clauses.append(f"with {_atom(protocol, limit=16)}")
    if queue_id:
        clauses.append(f"id {_atom(queue_id, limit=64)}")
    if recipient and (mailbox := _mailbox(recipient)):
        clauses.append(f"for <{mailbox}>")
    clauses[-1] += ";"
    clauses.append(format_datetime(now))
    return _fold("Received:", clauses).encode("utf-8")


def _fold(name: str, clauses: list[str]) -> str:
    """Greedy folding at clause boundaries: CRLF + TAB before a clause that would overflow."""
    lines = [name]
    for clause in clauses:
        if len(lines[-1]) + 1 + len(clause) > FOLD_AT and lines[-1] != name:
            lines.append("\t" + clause)
        else:
            lines[-1] += " " + clause
    return "\r\n".join(lines) + "\r\n"


def _helo(text: str) -> str:
    return _name(text, limit=HELO_LIMIT) or "unknown"


def _name(text: str, *, limit: int) -> str:
    return _UNSAFE_NAME.sub("?", text.strip())[:limit]


def _atom(text: str, *, limit: int) -> str:
    return _UNSAFE_ATOM.sub("?", text.strip())[:limit] or "unknown"


def _address_literal(text: str) -> str:
    """RFC 5321 TCP-info: `[192.0.2.1]` or `[IPv6:2001:db8::1]`; `unknown` for anything else."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def _mailbox(text: str) -> str | None:
    """The recipient as given, or None (clause dropped) if it could break the field."""
    value = text.strip().strip("<>")
    if not value or _UNSAFE_MAILBOX.search(value) or len(value) > 254:
        return None
    return value
