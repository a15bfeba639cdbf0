"""The secret that signs reply addresses: created once, fingerprinted in the database."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from gateway.config import ConfigError, Settings
from rules.errors import GatewayError
from rules.tokens import secret_fingerprint
from storage import audit, meta

SECRET_BYTES = 32
FINGERPRINT_KEY = "secret_fingerprint"


class SecretError(GatewayError):
    """The secret is missing where it must be shared, or does not match the database."""


@dataclass(frozen=True)
class Secrets:
    current: bytes
    previous: bytes | None

    @property
    def all(self) -> tuple[bytes, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)


def load(settings: Settings, *, create: bool) -> Secrets:
    """Read the secret files; create the current one (0600, 32 random bytes) when allowed."""
    path = settings.gateway.secret_file
    if not path.exists():
        if not create or settings.storage.is_postgresql:
            raise ConfigError(
                settings.path,
                f"{path} does not exist; instances that share a "
                "PostgreSQL database must share one secret: copy it from another "
                "instance"
                if settings.storage.is_postgresql
                else f"{path} does not exist",
                "gateway",
                "secret_file",
            )
        _create(path)
    current = _read(settings, path, "secret_file")
    previous_path = settings.gateway.previous_secret_file
    previous = _read(settings, previous_path, "previous_secret_file") if previous_path else None
    return Secrets(current, previous)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two instances starting at once never overwrite each other's secret.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(SECRET_BYTES))
        handle.flush()
        os.fsync(handle.fileno())


def _read(settings: Settings, path: Path, key: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            settings.path, f"cannot read {path}: {error.strerror}", "gateway", key
        ) from None
    if len(data) < 16:
        raise ConfigError(
            settings.path,
            f"{path} holds {len(data)} bytes: expected a secret of at least 16 bytes",
            "gateway",
            key,
        )
    return data


def check_fingerprint(session: Session, found: Secrets, at: datetime) -> None:
    """Record the fingerprint on first use; refuse a secret the database does not know.

    During a rotation the database knows the previous secret: the new one is accepted,
    recorded, and the rotation becomes an audit event.
    """
    meta.hold(session)
    stored = meta.get(session, FINGERPRINT_KEY)
    current = secret_fingerprint(found.current)
    if stored is None or stored == current:
        meta.put(session, FINGERPRINT_KEY, current)
        return
    if found.previous is not None and stored == secret_fingerprint(found.previous):
        meta.put(session, FINGERPRINT_KEY, current)
        audit.append(
            session,
            at=at,
            action="secret-rotated",
            actor="gateway",
            detail={"previous": stored[:12], "current": current[:12]},
        )
        return
    raise SecretError(
        "the secret file does not match the one this database was used with "
        "(nor previous_secret_file): signed reply addresses would all fail. "
        "Restore the right secret, or set previous_secret_file to rotate."
    )
