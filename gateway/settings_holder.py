"""The settings in force: read per transaction, swapped whole by a reload (SPEC section 10)."""

from __future__ import annotations

import threading

from gateway.config import Settings


class SettingsHolder:
    """Components call `current()`; SIGHUP replaces the value for the next transaction."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()

    def current(self) -> Settings:
        return self._settings

    def replace(self, settings: Settings) -> None:
        with self._lock:
            self._settings = settings
