"""Retention's IMAP part (SPEC section 7a): purged cases' originals leave processed_folder."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence

from gateway import logs
from gateway.config import Settings
from gateway.imap_client import ImapError, connect

log = logs.get("imap")
TIMEOUT = 60.0


def delete_originals(
    settings: Settings, message_ids: Sequence[str], tls_context: ssl.SSLContext | None = None
) -> int:
    """Expunge the originals with these Message-IDs; a failure is logged, never raised
    (the next daily run does not retry: docs/operations.md lists what purge cannot reach)."""
    imap = settings.imap
    if not imap.enabled or not message_ids:
        return 0
    assert imap.host is not None
    assert imap.username is not None
    assert imap.password_file is not None
    try:
        password = imap.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        connection = connect(
            imap.host,
            imap.port,
            imap.security,
            imap.username,
            password,
            timeout=TIMEOUT,
            tls_context=tls_context,
        )
    except (OSError, ImapError) as error:
        logs.event(log, logging.ERROR, "imap-purge-failed", error=type(error).__name__)
        return 0
    try:
        deleted = connection.delete_by_message_id(imap.processed_folder, message_ids)
    except ImapError as error:
        logs.event(log, logging.ERROR, "imap-purge-failed", error=type(error).__name__)
        return 0
    finally:
        connection.close()
    logs.event(log, logging.INFO, "imap-purged", originals=deleted)
    return deleted


def purger(settings: Callable[[], Settings]) -> Callable[[list[str]], Awaitable[None]]:
    """The scheduler's `purged` callback: the IMAP work runs in a thread."""

    async def purge(message_ids: list[str]) -> None:
        await asyncio.to_thread(delete_originals, settings(), message_ids)

    return purge
