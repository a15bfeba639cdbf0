"""Group commit for received mail: concurrent stores share one transaction and one fsync."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from storage import inbox
from storage.db import Database

MAX_BATCH = 64


@dataclass
class _Item:
    message: inbox.Incoming
    now: datetime
    result: inbox.Stored | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class InboxWriter:
    """Called from worker threads. The first caller to find no commit running commits
    everything queued so far; the others wait for that commit and return its answer, so
    each 250 still follows its own commit (SPEC section 2)."""

    def __init__(self, database: Database, source: str) -> None:
        self.database = database
        self.source = source
        self._cond = threading.Condition()
        self._queue: list[_Item] = []
        self._flushing = False

    def store(
        self, raw: bytes, sender: str | None, recipients: Sequence[str], now: datetime
    ) -> inbox.Stored:
        # Hashed here, in the caller's thread, before the write lock is taken.
        item = _Item(inbox.incoming(raw, sender, tuple(recipients)), now)
        with self._cond:
            self._queue.append(item)
            while self._flushing and not item.done:
                self._cond.wait()
            if not item.done:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._flushing = True
            else:
                batch = []
        if batch:
            try:
                self._flush(batch)
            finally:
                with self._cond:
                    self._flushing = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _flush(self, batch: list[_Item]) -> None:
        try:
            with self.database.transaction(urgent=True) as session:
                results = inbox.store_many(
                    session, [item.message for item in batch], source=self.source, now=batch[0].now
                )
        except Exception as error:
            if len(batch) == 1:
                batch[0].error = error
                batch[0].done = True
                return
            # One bad message must not fail the others: each on its own, then.
            for item in batch:
                self._flush([item])
            return
        for item, result in zip(batch, results, strict=True):
            item.result = result
            item.done = True
