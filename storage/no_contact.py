"""Active no-contact sanctions as the list relay needs them: accused -> protected addresses."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.models import Participant, Sanction

PROTECTED_ROLES = ("reporter", "target")


def protected_by_accused(session: Session, now: datetime) -> dict[str, frozenset[str]]:
    cases = select(Sanction.case_number).where(
        Sanction.kind == "no-contact", or_(Sanction.until.is_(None), Sanction.until > now)
    )
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
