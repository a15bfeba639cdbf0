"""The project's single exception base; each error builds its own message."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""
