"""What the IMAP watcher did with each (mailbox, UIDVALIDITY, UID): committed, moved, too large."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage import bulk
from storage.models import ImapSeen

COMMITTED = "committed"  # in the inbox; still to be moved to the processed folder
MOVED = "moved"
TOO_LARGE = "too-large"  # left in the folder, flagged, staff told once
REFUSED = "refused"  # the database would not store it: left in the folder, flagged, told once


@dataclass(frozen=True)
class Seen:
    mailbox: str
    uidvalidity: int
    uid: int
    dedup_key: str | None
    state: str
    at: datetime


def states(session: Session, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> dict[int, str]:
    """The recorded state of each of `uids` that has one."""
    wanted = list(uids)
    found: dict[int, str] = {}
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(ImapSeen.uid, ImapSeen.state).where(
                ImapSeen.mailbox == mailbox,
                ImapSeen.uidvalidity == uidvalidity,
                bulk.one_of(session, ImapSeen.uid, wanted[start : start + 500]),
            )
        )
        found.update({int(uid): str(state) for uid, state in rows.all()})
    return found


def record_committed(
    session: Session,
    mailbox: str,
    uidvalidity: int,
    committed: Iterable[tuple[int, str]],
    now: datetime,
) -> None:
    """In the transaction that stored them: these (UID, dedup key) are in the inbox, not
    yet moved. One multi-row statement: the watcher records a whole fetched batch."""
    bulk.insert_many(
        session,
        cast(Table, ImapSeen.__table__),
        ("uid", "dedup_key"),
        list(committed),
        {"mailbox": mailbox, "uidvalidity": uidvalidity, "state": COMMITTED, "at": now},
        on_conflict="ON CONFLICT (mailbox, uidvalidity, uid) DO UPDATE SET "
        "dedup_key = excluded.dedup_key, state = excluded.state, at = excluded.at",
    )


def mark_moved(
    session: Session, mailbox: str, uidvalidity: int, uids: Iterable[int], now: datetime
) -> None:
    wanted = list(uids)
    for start in range(0, len(wanted), 500):
        session.execute(
            update(ImapSeen)
            .where(
                ImapSeen.mailbox == mailbox,
                ImapSeen.uidvalidity == uidvalidity,
                bulk.one_of(session, ImapSeen.uid, wanted[start : start + 500]),
            )
            .values(state=MOVED, at=now)
        )


def claim_left(
    session: Session, mailbox: str, uidvalidity: int, uid: int, state: str, now: datetime
) -> bool:
    """Record a message left in the folder (`TOO_LARGE` or `REFUSED`); True only the first
    time, so staff are told once."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(ImapSeen)
        .values(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            dedup_key=None,
            state=state,
            at=now,
        )
        .on_conflict_do_nothing(
            index_elements=[ImapSeen.mailbox, ImapSeen.uidvalidity, ImapSeen.uid]
        )
        .returning(ImapSeen.uid)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def seen(session: Session, mailbox: str) -> list[Seen]:
    """Every record for `mailbox`, oldest UIDVALIDITY and UID first."""
    rows = session.execute(
        select(ImapSeen)
        .where(ImapSeen.mailbox == mailbox)
        .order_by(ImapSeen.uidvalidity, ImapSeen.uid)
    ).scalars()
    return [Seen(r.mailbox, r.uidvalidity, r.uid, r.dedup_key, r.state, r.at) for r in rows]
