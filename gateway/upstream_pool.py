"""Idle connections to the list server, kept for the next post.

Connecting, greeting and saying goodbye cost the list server and the gateway more than
relaying a small post does, so a session whose transaction ended cleanly (its DATA
reply read) waits here for the next one, as Postfix's connection cache does for its
SMTP client. An idle session is closed after `idle` seconds, or when the upstream it
talks to is no longer the configured one (a reload). A session the upstream closed
while it waited is found out at its next MAIL, which the relay then sends again on a
fresh connection: nothing of the post had been sent, so nothing can be duplicated.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Protocol

IDLE_SECONDS = 10.0
MOST_IDLE = 16
GOODBYE_SECONDS = 5.0  # at shutdown: a list server that does not answer QUIT is cut off


class Reusable(Protocol):
    @property
    def usable(self) -> bool: ...

    async def close(self) -> None: ...


class UpstreamPool:
    """Used from the event loop only: no locking needed."""

    def __init__(
        self,
        idle: float = IDLE_SECONDS,
        most: int = MOST_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.most = most
        self._clock = clock
        self._waiting: deque[tuple[Hashable, Reusable, float]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self.reused = 0  # how many posts went over a kept connection (tests read it)

    def take(self, key: Hashable) -> Reusable | None:
        """The most recently used idle session for `key`, or None."""
        self.sweep()
        if self._waiting and self._waiting[-1][0] != key:
            self._close_all()  # the configured upstream changed
        if not self._waiting:
            return None
        self.reused += 1
        return self._waiting.pop()[1]

    def give(self, key: Hashable, session: Reusable) -> None:
        """A session whose transaction ended cleanly: keep it if there is room."""
        if not session.usable or len(self._waiting) >= self.most:
            self._close(session)
            return
        self._waiting.append((key, session, self._clock()))

    def sweep(self) -> None:
        """Close the sessions idle for longer than `idle` (called every second, too)."""
        now = self._clock()
        while self._waiting and now - self._waiting[0][2] >= self.idle:
            self._close(self._waiting.popleft()[1])

    async def close(self) -> None:
        """At shutdown: say goodbye to every idle session, waiting a few seconds at most
        (a hung list server must not hold up the drain); the rest are cut off."""
        self._close_all()
        if not self._closing:
            return
        _, late = await asyncio.wait(set(self._closing), timeout=GOODBYE_SECONDS)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _close_all(self) -> None:
        while self._waiting:
            self._close(self._waiting.popleft()[1])

    def _close(self, session: Reusable) -> None:
        task = asyncio.ensure_future(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
