"""Intake before processing: the pipeline gives way while SMTP clients are being served.

Accepting mail is the promise that cannot wait: a sending MTA that gets no 250 in time
retries, and under a flood every second of CPU the pipeline takes is a second the
ingress cannot answer in. Stored mail is safe and can be processed a moment later. The
ingress and the pipeline share one process and so one interpreter lock, which the
operating system cannot prioritise; the pipeline therefore yields by itself: before
each message it waits until the ingress has been quiet for a moment, but never longer
than `longest`, so processing always goes on (at least one message per `longest`) and
an idle gateway processes at once (SPEC section 2's 5 s bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

QUIET_SECONDS = 0.02
LONGEST_SECONDS = 0.25
MIN_SLEEP = 0.001


class IntakePriority:
    """Shared by the SMTP handler (`touch`, on the event loop) and the pipeline's worker
    thread (`give_way`). A float store and read: no lock is needed."""

    def __init__(
        self,
        quiet: float = QUIET_SECONDS,
        longest: float = LONGEST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.quiet = quiet
        self.longest = longest
        self._clock = clock
        self._sleep = sleep
        self._last = float("-inf")
        self.waited = 0.0  # seconds the pipeline has given way, for the logs and tests
        self._stop = threading.Event()

    def touch(self) -> None:
        """An SMTP command is being served."""
        self._last = self._clock()

    def release(self) -> None:
        """Stop waiting at once (shutdown): draining must not wait for quiet."""
        self._stop.set()

    def give_way(self) -> None:
        """Wait until the ingress has been quiet for `quiet` seconds, at most `longest`."""
        start = now = self._clock()
        deadline = start + self.longest
        while not self._stop.is_set():
            remaining = min(self.quiet - (now - self._last), deadline - now)
            if remaining < MIN_SLEEP:  # also ends float residues of a just-finished wait
                break
            self._sleep(remaining)
            now = self._clock()
        self.waited += now - start
