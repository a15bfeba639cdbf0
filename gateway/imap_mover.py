"""Moving committed batches on a second IMAP connection while the first fetches the next.

A backlog pass alternates fetch, commit and MOVE. On one connection the server does them
in turn; on two, a second server process moves batch n while the first serves batch n+1,
and the watcher's thread only waits for the last move. The order that matters is kept:
a batch reaches the mover only after its transaction committed. Whatever the mover has
not moved when something fails is moved by the next pass, which finds it committed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from gateway import logs
from gateway.imap_client import ImapConnection, ImapError

log = logs.get("imap")


class FolderChanged(ImapError):
    def __init__(self, folder: str) -> None:
        super().__init__(f"{folder} changed UIDVALIDITY during the pass; nothing more moved")


class Mover:
    """A thread with its own connection, moving each batch it is given, in order.

    `ready` waits until that connection is open and says whether it could be: a server
    that allows one connection per account refuses the second, and the caller then moves
    on its own connection as without a mover. `put` never blocks; `finish` waits for every
    batch given so far, closes the connection and raises the first error, if any. After
    an error the rest of the batches are not moved. `moved` lists what was moved, for the
    caller to record in one transaction (recording each batch here would contend with the
    next batch's commit for SQLite's write lock). `alive` is called after each batch
    moved, for the watcher's watchdog, which aborts both connections when neither makes
    progress.
    """

    def __init__(
        self,
        open_connection: Callable[[], ImapConnection],
        folder: str,
        uidvalidity: int,
        processed_folder: str,
        alive: Callable[[], None],
    ) -> None:
        self._open = open_connection
        self._folder, self._uidvalidity = folder, uidvalidity
        self._processed_folder = processed_folder
        self._alive = alive
        self.moved: list[int] = []  # in order; recorded by the caller after `finish`
        self._batches: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._opened = threading.Event()
        self._connected = False
        self._thread = threading.Thread(target=self._run, name="imap-mover", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        """True once the connection is open and the folder selected; False if the server
        would not have a second connection."""
        self._opened.wait()
        if self._error is not None:
            raise self._error
        return self._connected

    def put(self, uids: list[int]) -> None:
        """Move these UIDs (already committed) after the batches given before."""
        if self._error is not None:
            raise self._error
        self._batches.put(uids)

    def finish(self) -> None:
        self._batches.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            connection = self._open()
        except Exception as error:
            logs.event(
                log,
                logging.WARNING,
                "imap-mover-unavailable",
                error=type(error).__name__,
                detail=str(error)[:200] if isinstance(error, ImapError | OSError) else None,
            )
            self._opened.set()
            return
        try:
            if connection.select(self._folder).uidvalidity != self._uidvalidity:
                raise FolderChanged(self._folder)
            self._connected = True
            self._opened.set()
            while (uids := self._batches.get()) is not None:
                connection.move(uids, self._processed_folder)
                self.moved += uids
                self._alive()
        except BaseException as error:  # handed to the watcher's thread by `finish`
            self._error = error
        finally:
            self._opened.set()
            if self._error is None:
                connection.close()
            else:
                connection.abort()
