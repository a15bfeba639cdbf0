"""How the command line shows bans and held posts: the JSON shapes of SPEC section 9, and text."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from storage.bans import BanRecord
from storage.held import HeldRecord


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset, as stored (SPEC section 9); None stays null."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def local(moment: datetime | None, zone: tzinfo) -> str:
    """A time for people, in `[reminders] timezone`; "-" when absent."""
    if moment is None:
        return "-"
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")


def ban_json(record: BanRecord, now: datetime) -> dict[str, Any]:
    ban = record.ban
    return {
        "id": ban.id,
        "pattern": str(ban.pattern),
        "list": ban.list,
        "reason": ban.reason,
        "created_by": ban.created_by,
        "created_at": iso(ban.created_at),
        "expires_at": iso(ban.expires_at),
        "case": ban.case,
        "active": record.active(now),
        "interim": ban.interim,
        "lifted_at": iso(record.lifted_at),
    }


def held_json(record: HeldRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "list": record.list,
        "sender": record.sender,
        "subject": record.subject,
        "reason": record.reason,
        "held_at": iso(record.held_at),
        "ban": record.ban_id,
        "case": record.case,
    }


def check_json(
    address: str, list_address: str | None, found: BanRecord | None, now: datetime
) -> dict[str, Any]:
    return {
        "address": address,
        "list": list_address,
        "banned": found is not None,
        "ban": None if found is None else ban_json(found, now),
    }


def ban_state(record: BanRecord, now: datetime) -> str:
    if record.lifted_at is not None:
        return "lifted"
    return "active" if record.ban.active(now) else "expired"


def describe_ban(record: BanRecord, zone: tzinfo) -> str:
    """`ban 3: *@example.com on all lists until 2026-12-01 00:00 +0000 (case 4, interim)`."""
    ban = record.ban
    text = f"ban {ban.id}: {ban.pattern} on {ban.list or 'all lists'}"
    if ban.expires_at is not None:
        text += f" until {local(ban.expires_at, zone)}"
    notes = [f"case {ban.case}"] if ban.case is not None else []
    if ban.interim:
        notes.append("interim")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to width; the last column is left ragged (reasons, subjects)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def bans_table(records: Sequence[BanRecord], now: datetime, zone: tzinfo) -> str:
    header = ("ID", "STATE", "PATTERN", "LIST", "EXPIRES", "CASE", "BY", "REASON")
    rows = [
        (
            str(r.ban.id),
            ban_state(r, now) + (" (interim)" if r.ban.interim else ""),
            str(r.ban.pattern),
            r.ban.list or "all",
            local(r.ban.expires_at, zone),
            "-" if r.ban.case is None else str(r.ban.case),
            r.ban.created_by,
            r.ban.reason or "",
        )
        for r in records
    ]
    return _table(header, rows)


def held_table(records: Sequence[HeldRecord], zone: tzinfo) -> str:
    header = ("ID", "LIST", "SENDER", "HELD", "REASON", "SUBJECT")
    rows = [
        (
            str(r.id),
            r.list,
            r.sender or "-",
            local(r.held_at, zone),
            r.reason,
            " ".join((r.subject or "").split()),
        )
        for r in records
    ]
    return _table(header, rows)
