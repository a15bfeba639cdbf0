"""Active no-contact sanctions as the list relay needs them: accused -> protected addresses,
and the cases behind a hold."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from storage.models import Participant, Sanction

PROTECTED_ROLES = ("reporter", "target")


def _in_force(now: datetime) -> Select[int]:
    return select(Sanction.case_number).where(
        Sanction.kind == "no-contact", or_(Sanction.until.is_(None), Sanction.until > now)
    )


def cases_of_accused(session: Session, addresses: Iterable[str], now: datetime) -> list[int]:
    """The cases, oldest first, whose no-contact sanction in force has one of `addresses`
    as its accused: the cases a no-contact hold of their post belongs to."""
    rows = session.execute(
        select(Participant.case_number)
        .where(
            Participant.case_number.in_(_in_force(now)),
            Participant.role == "accused",
            Participant.address.in_(list(addresses)),
        )
        .distinct()
        .order_by(Participant.case_number)
    )
    return [int(number) for number in rows.scalars()]


def protected_by_accused(session: Session, now: datetime) -> dict[str, frozenset[str]]:
    cases = _in_force(now)
    rows = session.execute(
        select(Participant.case_number, Participant.address, Participant.role).where(
            Participant.case_number.in_(cases)
        )
    )
    accused: dict[int, set[str]] = defaultdict(set)
    protected: dict[int, set[str]] = defaultdict(set)
    for case, address, role in rows:
        if not address:
            continue
        if role == "accused":
            accused[case].add(address)
        elif role in PROTECTED_ROLES:
            protected[case].add(address)
    result: dict[str, set[str]] = defaultdict(set)
    for case, people in accused.items():
        for person in people:
            result[person] |= protected[case]
    return {person: frozenset(others) for person, others in result.items() if others}
