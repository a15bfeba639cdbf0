"""The bans repository: add, import, lift, load; and the change marker running servers poll."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Text, cast, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rules.bans import Ban, BanPattern, PatternKind
from storage import audit
from storage.models import BanRow, Meta, Timer

VERSION_KEY = "bans_version"
_INSERT_CHUNK = 5000
_COLUMNS = (
    BanRow.id,
    BanRow.pattern,
    BanRow.list,
    BanRow.reason,
    BanRow.created_by,
    BanRow.created_at,
    BanRow.expires_at,
    BanRow.case_number,
    BanRow.interim,
    BanRow.lifted_at,
    BanRow.lifted_by,
)


@dataclass(frozen=True)
class BanRecord:
    """A stored ban with its lifecycle: lifted bans and expired ones are kept for the record."""

    ban: Ban
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    def active(self, now: datetime) -> bool:
        return self.lifted_at is None and self.ban.active(now)


def stored_pattern(text: str) -> BanPattern:
    """Read back the canonical `str(BanPattern)` this repository stores, without re-validating.

    The text was validated (and RE2-checked) when the ban was added; loading 100,000 bans
    must not parse and compile every one again.
    """
    if text.startswith("re:"):
        return BanPattern(PatternKind.REGEX, text[3:], text)
    if text.startswith("*@*."):
        return BanPattern(PatternKind.SUBDOMAINS, text[4:], text)
    if text.startswith("*@"):
        return BanPattern(PatternKind.DOMAIN, text[2:], text)
    return BanPattern(PatternKind.EXACT, text, text)


def _scope(list_address: str | None) -> str | None:
    return None if list_address is None else list_address.strip().lower()


def _same_scope(list_address: str | None) -> ColumnElement[bool]:
    return BanRow.list.is_(None) if list_address is None else BanRow.list == list_address


def _in_force(now: datetime) -> ColumnElement[bool]:
    return BanRow.lifted_at.is_(None) & or_(BanRow.expires_at.is_(None), BanRow.expires_at > now)


def _record(row: Any) -> BanRecord:
    ban = Ban(
        id=row.id,
        pattern=stored_pattern(row.pattern),
        list=row.list,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        case=row.case_number,
        interim=bool(row.interim),
    )
    return BanRecord(ban, row.lifted_at, row.lifted_by)


def _bump_version(session: Session) -> None:
    """Increment the marker atomically (a row lock on PostgreSQL), so no change goes unseen."""
    statement = (
        update(Meta)
        .where(Meta.key == VERSION_KEY)
        .values(value=cast(cast(Meta.value, Integer) + 1, Text))
        .execution_options(synchronize_session=False)
    )
    session.execute(statement)
    if session.execute(select(Meta.value).where(Meta.key == VERSION_KEY)).scalar() is not None:
        return
    try:
        with session.begin_nested():
            session.add(Meta(key=VERSION_KEY, value="1"))
    except IntegrityError:
        # Another instance made the row first; count this change on top of it.
        session.execute(statement)


def version(session: Session) -> int:
    """The change marker: it goes up with every add, import and lift (0 before the first)."""
    value = session.execute(select(Meta.value).where(Meta.key == VERSION_KEY)).scalar()
    return 0 if value is None else int(value)


def _detail(ban: Ban) -> dict[str, Any]:
    return {
        "ban": ban.id,
        "pattern": str(ban.pattern),
        "list": ban.list,
        "reason": ban.reason,
        "expires_at": None if ban.expires_at is None else ban.expires_at.isoformat(),
        "interim": ban.interim,
    }


def add(
    session: Session,
    *,
    pattern: BanPattern,
    list_address: str | None,
    reason: str | None,
    created_by: str,
    now: datetime,
    expires_at: datetime | None = None,
    case: int | None = None,
    interim: bool = False,
) -> Ban:
    """Store one ban (the caller has already refused protected patterns) and audit it."""
    row = BanRow(
        pattern=str(pattern),
        list=_scope(list_address),
        reason=reason,
        created_by=created_by,
        created_at=now,
        expires_at=expires_at,
        case_number=case,
        interim=interim,
    )
    session.add(row)
    session.flush()
    ban = _record(row).ban
    audit.append(
        session, at=now, action="ban-added", actor=created_by, case=case, detail=_detail(ban)
    )
    _bump_version(session)
    return ban


def add_many(
    session: Session,
    *,
    patterns: Iterable[BanPattern],
    list_address: str | None,
    reason: str | None,
    created_by: str,
    now: datetime,
    expires_at: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Bulk import: (added, already present). A pattern already in force with the same scope,
    or repeated in `patterns`, is counted as present. One audit event for the whole import.

    `progress`, when given, is called with the number of patterns handled per chunk.
    """
    scope = _scope(list_address)
    present = set(
        session.execute(select(BanRow.pattern).where(_same_scope(scope), _in_force(now))).scalars()
    )
    added = already = 0
    chunk: list[dict[str, Any]] = []
    handled = 0

    def flush() -> None:
        nonlocal handled
        if chunk:
            session.execute(insert(BanRow), chunk)
            chunk.clear()
        if progress is not None and handled:
            progress(handled)
        handled = 0

    for pattern in patterns:
        handled += 1
        text = str(pattern)
        if text in present:
            already += 1
        else:
            present.add(text)
            added += 1
            chunk.append(
                {
                    "pattern": text,
                    "list": scope,
                    "reason": reason,
                    "created_by": created_by,
                    "created_at": now,
                    "expires_at": expires_at,
                    "case_number": None,
                    "interim": False,
                }
            )
        if handled == _INSERT_CHUNK:
            flush()
    flush()
    if added:
        audit.append(
            session,
            at=now,
            action="bans-imported",
            actor=created_by,
            detail={"added": added, "already_present": already, "list": scope, "reason": reason},
        )
        _bump_version(session)
    return added, already


def get(session: Session, ban_id: int) -> BanRecord | None:
    row = session.execute(select(*_COLUMNS).where(BanRow.id == ban_id)).one_or_none()
    return None if row is None else _record(row)


def lift(session: Session, ban_id: int, by: str, now: datetime) -> Ban | None:
    """Lift a ban that is not lifted yet (an expired one too, for the record); else None."""
    row = session.execute(
        select(BanRow).where(BanRow.id == ban_id, BanRow.lifted_at.is_(None)).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return None
    row.lifted_at = now
    row.lifted_by = by
    session.flush()
    ban = _record(row).ban
    audit.append(session, at=now, action="ban-lifted", actor=by, case=ban.case, detail=_detail(ban))
    _bump_version(session)
    _cancel_end_notice(session, ban, now)
    return ban


def _cancel_end_notice(session: Session, ban: Ban, now: datetime) -> None:
    """A lifted ban has no end to announce: its pending ban-end notice is cancelled.

    Notices are tied to their ban (`ref_id`). One without that tie (none is made so now)
    is matched by case and due time, unless another ban of the case ends then too.
    """
    if ban.case is None or ban.expires_at is None:
        return
    pending = (Timer.kind == "ban-end") & Timer.fired_at.is_(None) & Timer.cancelled_at.is_(None)
    same_end = session.execute(
        select(BanRow.id).where(
            BanRow.case_number == ban.case,
            BanRow.expires_at == ban.expires_at,
            BanRow.lifted_at.is_(None),
            BanRow.id != ban.id,
        )
    ).first()
    unlinked = (
        Timer.ref_id.is_(None) & (Timer.case_number == ban.case) & (Timer.due_at == ban.expires_at)
    )
    mine = Timer.ref_id == ban.id
    session.execute(
        update(Timer)
        .where(pending, mine if same_end is not None else or_(mine, unlinked))
        .values(cancelled_at=now)
        .execution_options(synchronize_session=False)
    )


def schedule_end_notice(session: Session, ban: Ban, now: datetime) -> None:
    """Staff are told when a case's timed ban lapses (SPEC section 7)."""
    if ban.case is not None and ban.expires_at is not None:
        session.add(
            Timer(
                kind="ban-end",
                case_number=ban.case,
                ref_id=ban.id,
                due_at=ban.expires_at,
                created_at=now,
            )
        )


def find_active(
    session: Session, pattern: BanPattern, list_address: str | None, now: datetime
) -> Ban | None:
    """The oldest ban in force with this pattern and exactly this scope (None: all lists)."""
    row = session.execute(
        select(*_COLUMNS)
        .where(
            BanRow.pattern == str(pattern),
            _same_scope(_scope(list_address)),
            _in_force(now),
        )
        .order_by(BanRow.id)
        .limit(1)
    ).one_or_none()
    return None if row is None else _record(row).ban


def list_bans(session: Session, now: datetime, include_inactive: bool = False) -> list[BanRecord]:
    """Bans in force, oldest first; with `include_inactive`, lifted and expired ones too."""
    query = select(*_COLUMNS).order_by(BanRow.id)
    if not include_inactive:
        query = query.where(_in_force(now))
    return [_record(row) for row in session.execute(query)]


def for_case(session: Session, case: int) -> list[BanRecord]:
    """Every ban linked to a case, whatever its state."""
    rows = session.execute(select(*_COLUMNS).where(BanRow.case_number == case).order_by(BanRow.id))
    return [_record(row) for row in rows]


def load_active(session: Session, now: datetime) -> list[Ban]:
    """Bans not lifted and not expired at `now`, for a BanIndex (which re-checks expiry)."""
    query = select(*_COLUMNS).where(_in_force(now)).execution_options(yield_per=10_000)
    return [_record(row).ban for row in session.execute(query)]


def snapshot(session: Session, now: datetime) -> tuple[int, list[Ban]]:
    """The marker and the bans in force, the marker read first: a change committed in between
    makes the next poll rebuild again, never miss a change."""
    return version(session), load_active(session, now)
