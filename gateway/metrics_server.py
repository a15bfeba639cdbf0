"""`[metrics] listen`: Prometheus text at GET /metrics, database health at GET /healthz.

A small HTTP/1.1 server on the daemon's event loop: one request per connection, then
close. A scrape never touches the database: the figures that come from it (inbox,
outbox, cases) are refreshed in a thread every few seconds. /healthz runs `SELECT 1`
in a transaction like those that commit mail (on SQLite, `BEGIN IMMEDIATE`, so a
database locked longer than the probe's timeout counts as not answering), also in a
thread, and answers 503 when it fails or takes longer than HEALTH_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.exposition import choose_encoder
from sqlalchemy import text

from gateway import logs
from gateway.config import Settings
from gateway.metrics import Metrics
from rules.errors import GatewayError
from storage.backlog import Backlog, backlog
from storage.db import Database

log = logs.get("metrics")

REFRESH_SECONDS = 2.0
HEALTH_TIMEOUT = 3.0
# A request is a line and a few headers; anything slower or longer is not a scraper.
READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_LINE = 8 * 1024
MAX_HEADERS = 100
MAX_CONNECTIONS = 64
TEXT = "text/plain; charset=utf-8"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}

_T = TypeVar("_T")


class MetricsServerError(GatewayError):
    """The metrics server cannot start as configured."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"metrics server: {problem}")


class _BadRequest(Exception):
    pass


def _in_thread(function: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run `function` in a daemon thread of its own: a database that hangs holds that
    thread, never the shared executor the SMTP commits use, nor the process at exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def succeed(result: _T) -> None:
        if not future.done():
            future.set_result(result)

    def fail(error: Exception) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            try:
                result = function()
            except Exception as error:
                loop.call_soon_threadsafe(fail, error)
            else:
                loop.call_soon_threadsafe(succeed, result)

    threading.Thread(target=work, name="metrics-db", daemon=True).start()
    # Seen here so that a probe nobody waits for any more is not reported as unretrieved.
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


class MetricsServer:
    """A Component: `start()` listens on `[metrics] listen`; `port` is the bound port."""

    name = "metrics"

    def __init__(
        self,
        settings_provider: Callable[[], Settings],
        database: Database,
        metrics: Metrics,
        *,
        refresh_every: float = REFRESH_SECONDS,
        health_timeout: float = HEALTH_TIMEOUT,
    ) -> None:
        self._settings = settings_provider
        self._database = database
        self._metrics = metrics
        self._refresh_every = refresh_every
        self._health_timeout = health_timeout
        self._server: asyncio.Server | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Future[None] | None = None
        self._healthy = True
        self._refresh_failing = False
        self.port = 0

    async def start(self) -> None:
        listen = self._settings().metrics_listen
        if listen is None:
            raise MetricsServerError("[metrics] listen is empty")
        self._stopping.clear()
        await self._refresh()  # the first scrape already sees the database's figures
        self._server = await asyncio.start_server(
            self._serve, listen.host, listen.port, limit=MAX_LINE
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._refresher = asyncio.create_task(self._refresh_loop(), name="metrics-refresh")
        logs.event(log, logging.INFO, "metrics-listening", host=listen.host, port=self.port)

    async def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()  # a refresh stuck on the database is left to its thread
            await asyncio.gather(refresher, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- database figures -------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_every)
            if not self._stopping.is_set():
                await self._refresh()

    async def _refresh(self) -> None:
        def load() -> Backlog:
            with self._database.transaction() as session:
                return backlog(session)

        try:
            figures = await _in_thread(load)
        except Exception as error:
            if not self._refresh_failing:  # once per outage, not every few seconds
                logs.event(
                    log, logging.WARNING, "metrics-refresh-failed", error=type(error).__name__
                )
            self._refresh_failing = True
            return
        self._refresh_failing = False
        self._metrics.show_backlog(figures)

    async def healthy(self) -> bool:
        """Whether the database answers `SELECT 1` within the timeout; one probe at a time."""
        if self._probe is None or self._probe.done():
            self._probe = _in_thread(self._select_one)
        try:
            async with asyncio.timeout(self._health_timeout):
                await asyncio.shield(self._probe)
        except Exception as error:
            if self._healthy:
                logs.event(log, logging.WARNING, "database-unhealthy", error=type(error).__name__)
            self._healthy = False
            return False
        if not self._healthy:
            logs.event(log, logging.INFO, "database-healthy")
        self._healthy = True
        return True

    def _select_one(self) -> None:
        with self._database.transaction() as session:
            session.execute(text("SELECT 1"))

    # -- HTTP -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if len(self._connections) <= MAX_CONNECTIONS:
                await self._exchange(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that stalls or leaves gets nothing more
        except Exception as error:
            logs.event(log, logging.ERROR, "metrics-request-error", error=type(error).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                method, path, accept = await _read_head(reader)
        except _BadRequest:
            status, content_type, body, method = 400, TEXT, b"bad request\n", "GET"
        else:
            status, content_type, body = await self._answer(method, path, accept)
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Allow: GET, HEAD\r\n" if status == 405 else "")
            + "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + (b"" if method == "HEAD" else body))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    async def _answer(self, method: str, path: str, accept: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"method not allowed\n"
        if path == "/metrics":
            # The client library's own negotiation: Prometheus text 0.0.4 unless the
            # scraper asks for OpenMetrics, as Prometheus itself does.
            encode, content_type = choose_encoder(accept)
            return 200, content_type, encode(self._metrics.registry)
        if path == "/healthz":
            if await self.healthy():
                return 200, TEXT, b"ok\n"
            return 503, TEXT, b"database unavailable\n"
        return 404, TEXT, b"not found\n"


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """The method, path (query string dropped) and Accept header of one request; the
    other headers are read and ignored. Raises _BadRequest for anything that is not an
    HTTP/1.x request."""
    line = await _read_line(reader)
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest
    method, target = parts[0].decode("ascii", "replace"), parts[1]
    accept = ""
    for _ in range(MAX_HEADERS):
        header = await _read_line(reader)
        if not header:
            return method, target.split(b"?", 1)[0].decode("ascii", "replace"), accept
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"accept":
            accept = value.strip().decode("ascii", "replace")
    raise _BadRequest


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest from None
    return line[:-1].removesuffix(b"\r")
