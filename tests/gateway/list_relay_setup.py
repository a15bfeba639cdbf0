"""An in-process gateway for list tests: real SMTP ingress, list relay, outbox sender, sinks."""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gateway import config
from gateway.ban_cache import BanCache
from gateway.config import Settings
from gateway.daemon import prepare
from gateway.list_service import ListService
from gateway.sender import OutboxSender
from gateway.smtp_ingress import SmtpIngress
from rules.bans import parse_pattern
from storage import bans, held
from storage.models import AuditEvent, HeldPost, OutboxEntry
from tests.sinks import Received, Recorder, Sink, _LMTPController

T = TypeVar("T")
BOUND = 10.0  # SPEC section 2: owed mail reaches its server within 5 s; slack for load
DEV = "dev@lists.example.org"
ANNOUNCE = "announce@lists.example.org"
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
CONFIG = """[gateway]
conduct_address = conduct@example.org
staff = Alice Example <alice@example.org>, bob@example.org
executive_director = Erin Director <ed@example.org>
secret_file = {secret}
[storage]
url = {url}
[outbound]
smarthost = 127.0.0.1:{smarthost}
tls = none
retry_after = 1s
[relay]
lists = {lists}
list_domains = {list_domains}
upstream = 127.0.0.1:{upstream}
upstream_protocol = {protocol}
ban_action = {ban_action}
[moderators]
{moderators}
[smtp]
listen = 127.0.0.1:0
hostname = mx.example.org
timeout = {timeout}
max_connections = 300
[auth]
require_dkim = no
"""


MODERATORS = (
    "dev@lists.example.org = carol@example.org\nannounce@lists.example.org = dan@example.org"
)


def post(
    message_id: str = "post1@example.net",
    sender: str = "poster@example.net",
    to: str = "dev@lists.example.org",
    extra: bytes = b"",
    body: bytes = b"hello list\r\n",
) -> bytes:
    return (
        (
            f"From: Poster <{sender}>\r\nTo: {to}\r\nSubject: a question\r\n"
            f"Message-ID: <{message_id}>\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + body
    )


class LoopThread:
    """The daemon's event loop, in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.run(_cancel_the_rest())  # e.g. a relay abandoned at its deadline
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@dataclass
class SlowRecorder(Recorder):
    """A list server that takes `delay` seconds over each DATA."""

    delay: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ListGateway:
    """The components `serve` runs for list mail, wired as the daemon wires them."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        *,
        protocol: str = "smtp",
        ban_action: str = "reject",
        lists: str = "dev@lists.example.org, announce@lists.example.org",
        list_domains: str = "",
        moderators: str = MODERATORS,
        timeout: str = "5m",
        upstream_smtputf8: bool = False,
        upstream_delay: float = 0.0,
    ) -> None:
        self.upstream = Sink(lmtp=protocol == "lmtp")
        self.upstream.recorder = SlowRecorder(delay=upstream_delay)
        if upstream_smtputf8:
            kind = _LMTPController if protocol == "lmtp" else Controller
            self.upstream.controller = kind(
                self.upstream.recorder,
                hostname="127.0.0.1",
                port=self.upstream.port,
                enable_SMTPUTF8=True,
            )
            self.upstream.controller.start()
        else:
            self.upstream.start()
        self.smarthost = Sink().start()
        secret = tmp_path / "secret"
        if not secret.exists():
            secret.write_bytes(os.urandom(32))
            secret.chmod(0o600)
        path = tmp_path / "gateway.ini"
        path.write_text(
            CONFIG.format(
                secret=secret,
                url=url,
                smarthost=self.smarthost.port,
                upstream=self.upstream.port,
                protocol=protocol,
                ban_action=ban_action,
                lists=lists,
                list_domains=list_domains,
                moderators=moderators,
                timeout=timeout,
            ),
            encoding="utf-8",
        )
        self.settings: Settings = config.load(path)
        self.database, secrets = prepare(self.settings)
        self.thread = LoopThread()
        current: Callable[[], Settings] = lambda: self.settings  # noqa: E731
        self.bans = BanCache(self.database, clock=_now)
        self.lists = ListService(
            current, self.database, self.bans, secrets, _now, on_mail=lambda: self.sender.notify()
        )
        self.sender = OutboxSender(
            current,
            self.database,
            _now,
            upstream=self.lists.deliver_upstream,
            **_failure_hook(self.lists),
        )
        self.ingress = SmtpIngress(current, self.database, self.lists, _now)
        self.running: list[Any] = []
        for component in (self.bans, self.lists, self.sender, self.ingress):
            self.thread.run(component.start())
            self.running.append(component)
        assert self.ingress.port
        self.port = self.ingress.port

    def close(self) -> None:
        for component in reversed(self.running):
            self.thread.run(component.stop())
        self.thread.close()
        self.database.dispose()
        self.upstream.stop()
        self.smarthost.stop()

    # -- acting -----------------------------------------------------------------------

    def ban(
        self, pattern: str, list_address: str | None = None, expires_at: datetime | None = None
    ) -> int:
        with self.database.transaction() as session:
            added = bans.add(
                session,
                pattern=parse_pattern(pattern),
                list_address=list_address,
                reason="private reason",
                created_by="alice@example.org",
                now=_now(),
                expires_at=expires_at,
            )
        self.thread.run(self.bans.refresh_now())
        return added.id

    def send(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            return client.sendmail(sender, list(recipients), data)

    def release(self, held_id: int) -> None:
        with self.database.transaction() as session:
            assert held.release(session, held_id, "carol@example.org", _now()) is not None
        self.sender.notify()

    # -- looking ----------------------------------------------------------------------

    def held_posts(self) -> list[HeldPost]:
        with self.database.transaction() as session:
            rows = list(session.scalars(select(HeldPost).order_by(HeldPost.id)))
            session.expunge_all()
            return rows

    def audit(self, action: str) -> list[dict[str, Any]]:
        with self.database.transaction() as session:
            query = select(AuditEvent.detail).where(AuditEvent.action == action)
            rows = session.execute(query.order_by(AuditEvent.seq)).scalars()
            return [json.loads(detail) if isinstance(detail, str) else detail for detail in rows]

    def outbox(self) -> list[OutboxEntry]:
        with self.database.transaction() as session:
            rows = list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))
            session.expunge_all()
            return rows

    def notices_to(self, address: str, count: int = 1) -> list[Received]:
        found = self.smarthost.wait_for(
            lambda m: sum(x.rcpt_tos == (address,) for x in m) >= count, BOUND
        )
        return [m for m in found if m.rcpt_tos == (address,)]


def _failure_hook(lists: ListService) -> dict[str, Any]:
    # The hook that tells moderators about refused retries; absent before that fix.
    hook = getattr(lists, "upstream_failed", None)
    return {} if hook is None else {"upstream_failed": hook}


def _now() -> datetime:
    return datetime.now(UTC)


def settle(seconds: float = 1.0) -> None:
    """Give the sender a pass to deliver anything it should not (tests of absence)."""
    time.sleep(seconds)
