"""A thin LMTP client (RFC 2033) speaking aiosmtplib's reply and error types.

aiosmtplib has no LMTP, and its protocol object cannot carry one: it parses one reply per
received chunk and drops bytes that arrive while no reply is awaited, so of the replies
an LMTP server sends after the final dot (one per accepted recipient, usually in one TCP
segment) all but the first would be lost. This client reads replies from an
`asyncio.StreamReader` instead; aiosmtplib quotes its addresses and its exceptions report
failures, so the relay treats both upstream protocols alike.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

from aiosmtplib import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.email import quote_address

MAX_LINE = 8192  # as aiosmtplib: a reply line longer than this is a broken server
MAX_REPLY_LINES = 128
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_LINE_START_DOT = re.compile(rb"(?m)^\.")
# RFC 2033 section 4.2: a recipient whose reply never came may or may not have the message;
# a temporary failure gets it retried, which risks a duplicate rather than a loss.
REPLY_LOST = SMTPResponse(451, "4.4.2 Connection to the LMTP server lost before this reply")


class LMTPClient:
    """One LMTP session: connect, LHLO, then MAIL/RCPT/DATA as aiosmtplib.SMTP would."""

    def __init__(self, host: str, port: int, *, local_hostname: str, timeout: float) -> None:
        self.host = host
        self.port = port
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.esmtp_extensions: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> SMTPResponse:
        """Open the connection and read the greeting; an LMTP server greets with 220."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_LINE), self.timeout
            )
        except TimeoutError as error:
            raise SMTPConnectTimeoutError(f"timed out connecting to port {self.port}") from error
        except OSError as error:
            raise SMTPConnectError(f"error connecting to port {self.port}: {error}") from error
        greeting = await self._read_reply()
        if greeting.code != 220:
            self.close()
            raise SMTPConnectResponseError(greeting.code, greeting.message)
        return greeting

    async def lhlo(self) -> SMTPResponse:
        reply = await self.execute_command(b"LHLO", self.local_hostname.encode("ascii"))
        if reply.code != 250:
            raise SMTPHeloError(reply.code, reply.message)
        self.esmtp_extensions = _extensions(reply.message)
        return reply

    def supports_extension(self, extension: str, /) -> bool:
        return extension.lower() in self.esmtp_extensions

    async def mail(
        self, sender: str, /, *, options: Iterable[str] = (), encoding: str = "ascii"
    ) -> SMTPResponse:
        path = quote_address(sender).encode(encoding)
        params = [option.encode("ascii") for option in options]
        reply = await self.execute_command(b"MAIL", b"FROM:" + path, *params)
        if reply.code != 250:
            raise SMTPSenderRefused(reply.code, reply.message, sender)
        return reply

    async def rcpt(self, recipient: str, /, *, encoding: str = "ascii") -> SMTPResponse:
        path = quote_address(recipient).encode(encoding)
        reply = await self.execute_command(b"RCPT", b"TO:" + path)
        if reply.code not in (250, 251):
            raise SMTPRecipientRefused(reply.code, reply.message, recipient)
        return reply

    async def data(self, message: bytes, /, *, accepted: int) -> list[SMTPResponse]:
        """Send `message` (CRLF line ends) and return one reply per accepted recipient,
        in RCPT order (RFC 2033 section 4.2). A refused DATA command raises SMTPDataError;
        a connection lost after some replies gives REPLY_LOST for the rest, before any
        reply SMTPServerDisconnected or SMTPReadTimeoutError."""
        start = await self.execute_command(b"DATA")
        if start.code != 354:
            raise SMTPDataError(start.code, start.message)
        await self._send(_LINE_START_DOT.sub(b"..", message) + b".\r\n")
        replies: list[SMTPResponse] = []
        try:
            while len(replies) < accepted:
                replies.append(await self._read_reply())
        except (SMTPServerDisconnected, SMTPReadTimeoutError):
            if not replies:
                raise
        return replies + [REPLY_LOST] * (accepted - len(replies))

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def quit(self) -> None:
        """Say goodbye if the connection still stands; errors here change nothing."""
        try:
            if self._writer is not None and not self._writer.is_closing():
                await self.execute_command(b"QUIT")
        except SMTPException:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def execute_command(self, *args: bytes) -> SMTPResponse:
        for arg in args:
            if _CONTROL.search(arg):
                raise ValueError("command argument contains a control character")
        await self._send(b" ".join(args) + b"\r\n")
        return await self._read_reply()

    async def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise SMTPServerDisconnected("not connected")
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except TimeoutError as error:
            self.close()
            raise SMTPReadTimeoutError("timed out sending to the server") from error
        except ConnectionError as error:
            self.close()
            raise SMTPServerDisconnected(f"connection lost: {error}") from error

    async def _read_reply(self) -> SMTPResponse:
        """One reply, multi-line `250-...` continuations joined by newlines as aiosmtplib does."""
        if self._reader is None:
            raise SMTPServerDisconnected("not connected")
        texts: list[str] = []
        while len(texts) < MAX_REPLY_LINES:
            line = await self._read_line(self._reader)
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self.close()
                raise SMTPServerDisconnected(f"malformed reply line {line[:40]!r}")
            texts.append(line[4:].strip(b" \t").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return SMTPResponse(int(line[:3]), "\n".join(texts))
        self.close()
        raise SMTPServerDisconnected("reply too long")

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.timeout)
        except TimeoutError as error:
            self.close()
            raise SMTPReadTimeoutError("timed out waiting for the server's reply") from error
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as error:
            self.close()
            raise SMTPServerDisconnected(f"connection lost: {type(error).__name__}") from error
        return line.rstrip(b"\r\n")


def _extensions(lhlo_reply: str) -> dict[str, str]:
    """`{"size": "10240000", "8bitmime": ""}` from an LHLO reply (its first line is the name)."""
    found: dict[str, str] = {}
    for line in lhlo_reply.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.lower()] = params
    return found
