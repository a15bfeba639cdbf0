"""Facts about the store itself, such as the fingerprint of the secret it was used with."""

from __future__ import annotations

from sqlalchemy.orm import Session

from storage.models import Meta


def get(session: Session, key: str) -> str | None:
    row = session.get(Meta, key)
    return None if row is None else row.value


def put(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value
