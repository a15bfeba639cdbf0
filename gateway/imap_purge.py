"""Retention's IMAP part (SPEC section 7a): purged cases' originals leave processed_folder."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from gateway import logs
from gateway.config import Settings
from gateway.imap_client import ImapError, connect

log = logs.get("imap")
TIMEOUT = 60.0


def delete_by_message_id(
    settings: Settings, message_ids: Sequence[str], tls_context: ssl.SSLContext | None = None
) -> int | None:
    """Expunge the originals with these Message-IDs: how many went, or None when the server
    could not be reached or refused (logged, never raised: the caller keeps them pending)."""
    imap = settings.imap
    if not message_ids:
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
        return None
    try:
        deleted = connection.delete_by_message_id(imap.processed_folder, message_ids)
    except ImapError as error:
        logs.event(log, logging.ERROR, "imap-purge-failed", error=type(error).__name__)
        return None
    finally:
        connection.close()
    logs.event(log, logging.INFO, "imap-purged", originals=deleted)
    return deleted
