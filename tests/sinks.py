"""Real aiosmtpd servers standing in for the smarthost and the upstream list server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from tests.components import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps every message; `answer` can refuse or defer."""

    messages: list[Received] = field(default_factory=list)
    answer: str = "250 2.0.0 Ok"
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    # LMTP: a DATA answer per recipient (RFC 2033 section 4.2); others get `answer`.
    data_answers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.rcpt_answers and self.rcpt_answers[address].startswith("5"):
            return self.rcpt_answers[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or envelope.content)
        if isinstance(server, LMTP):
            replies = [self.data_answers.get(r, self.answer) for r in envelope.rcpt_tos]
            taken = tuple(
                r for r, a in zip(envelope.rcpt_tos, replies, strict=True) if a.startswith("2")
            )
            if taken:
                with self.lock:
                    self.messages.append(Received(envelope.mail_from, taken, data))
            return "\r\n".join(replies)
        if self.answer.startswith("2"):
            with self.lock:
                self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), data))
        return self.answer


class Sink:
    """A running SMTP or LMTP server on a free loopback port."""

    def __init__(self, *, lmtp: bool = False) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        self.lmtp = lmtp
        self.controller: Controller | None = None

    def start(self) -> Sink:
        kind = _LMTPController if self.lmtp else Controller
        self.controller = kind(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Received]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float,
    ) -> list[Received]:
        """Poll until `predicate` holds for the messages so far, or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages
            if predicate(found):
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"sink on port {self.port}: condition not met in {timeout}s; "
            f"got {len(self.messages)} messages"
        )


class _LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)
