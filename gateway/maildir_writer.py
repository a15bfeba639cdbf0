"""Writes outgoing mail into a Maildir (`smarthost = maildir:PATH`): tmp/, fsync, rename to new/.

The protocol is the one in https://cr.yp.to/proto/maildir.html: a unique name, the
whole file written and synced in tmp/, then renamed into new/ so a reader never sees
a partial message. Blocking; the sender runs it in a worker thread.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
from datetime import datetime
from pathlib import Path

SUBDIRECTORIES = ("tmp", "new", "cur")
_counter = itertools.count(1)


def ensure(root: Path) -> None:
    """Create the Maildir (mode 0700, it holds mail) if it is missing."""
    for name in SUBDIRECTORIES:
        (root / name).mkdir(mode=0o700, parents=True, exist_ok=True)


def unique_name(now: datetime) -> str:
    """`time.MusecPpidQnRrandom.host`: unique across processes, threads and hosts."""
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    stamp = now.timestamp()
    return (
        f"{int(stamp)}.M{now.microsecond}P{os.getpid()}Q{next(_counter)}"
        f"R{secrets.token_hex(8)}.{host}"
    )


def deliver(root: Path, raw: bytes, now: datetime) -> Path:
    """Write `raw` byte for byte as one new message; returns its path in new/."""
    ensure(root)
    name = unique_name(now)
    temporary = root / "tmp" / name
    final = root / "new" / name
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(root / "new")
    return final


def _sync_directory(path: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
