"""The systemd notify protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET, stdlib only."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

from gateway import logs

log = logs.get("systemd")

# A full receive queue must not stall the event loop: give up on that one message.
_SEND_TIMEOUT_SECONDS = 1.0


def _address(environ: Mapping[str, str]) -> str | None:
    """The socket path; '@' names Linux's abstract namespace (a leading NUL byte)."""
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # Unset, empty, or a transport this module does not speak (systemd 253's vsock:).
    return None


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (newline-separated KEY=VALUE lines); False when nobody listens."""
    address = _address(os.environ if environ is None else environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_SEND_TIMEOUT_SECONDS)
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as error:
        logs.event(log, logging.WARNING, "sd-notify-failed", detail=error.strerror or str(error))
        return False
    return True


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; None when no watchdog is asked of this process ($WATCHDOG_PID names another)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return None
    return usec / 2 / 1_000_000


async def _ping(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def start_watchdog() -> asyncio.Task[None] | None:
    """Ping from the event loop itself, so a blocked loop is what systemd sees and kills."""
    interval = watchdog_interval()
    if interval is None:
        return None
    logs.event(log, logging.INFO, "watchdog-started", interval=interval)
    return asyncio.create_task(_ping(interval), name="sd-watchdog")
