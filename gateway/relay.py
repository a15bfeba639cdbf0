"""Before-queue relay of a permitted post to the upstream list server (SPEC section 6).

An idle connection from the pool (gateway/upstream_pool.py) or a new one (connect, EHLO
for SMTP or LHLO for LMTP), then MAIL, one RCPT per recipient and DATA; a connection
whose transaction ended cleanly goes back to the pool, any other is closed with QUIT.
The upstream's replies come back as a RelayResult; only a failure to talk to the
upstream at all raises UpstreamUnavailable (the caller answers `451 4.4.1`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPSenderRefused,
)

from gateway import logs
from gateway.config_values import HostPort
from gateway.lmtp_client import REPLY_LOST, LMTPClient
from gateway.upstream_pool import UpstreamPool
from rules.errors import GatewayError
from rules.line_endings import normalise_line_endings

log = logs.get("relay")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply; `text` keeps the enhanced status code and any continuation lines."""

    code: int
    text: str

    @classmethod
    def of(cls, response: SMTPResponse) -> Reply:
        return cls(response.code, response.message)

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def render(self) -> str:
        """The reply as the gateway's aiosmtpd sends it: `250-...` continuation lines
        joined by CRLF, printable ASCII only (aiosmtpd encodes replies as ASCII)."""
        lines = [_UNPRINTABLE.sub("?", line) for line in self.text.split("\n")]
        head = [f"{self.code}-{line}" for line in lines[:-1]]
        return "\r\n".join([*head, f"{self.code} {lines[-1]}".rstrip()])


@dataclass(frozen=True)
class RecipientReply:
    recipient: str
    reply: Reply


@dataclass(frozen=True)
class RelayResult:
    """The upstream's final word for every recipient, in the order given.

    A recipient refused at RCPT keeps that reply; the others get the DATA reply (SMTP:
    one for all; LMTP: one each). `transaction_reply` is the single reply that settled
    the whole SMTP transaction (MAIL refusal or the DATA reply), None otherwise.
    """

    replies: tuple[RecipientReply, ...]
    transaction_reply: Reply | None = None

    @classmethod
    def everyone(cls, recipients: Sequence[str], reply: Reply) -> RelayResult:
        return cls(tuple(RecipientReply(r, reply) for r in recipients), transaction_reply=reply)

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(item.recipient for item in self.replies if item.reply.accepted)

    @property
    def deferred(self) -> tuple[str, ...]:
        """Recipients with a 4xx: the outbox retries these."""
        return tuple(item.recipient for item in self.replies if item.reply.temporary)

    @property
    def refused(self) -> tuple[str, ...]:
        """Recipients with a 5xx: recorded and told to the list's moderators."""
        return tuple(item.recipient for item in self.replies if item.reply.permanent)

    @property
    def any_accepted(self) -> bool:
        return any(item.reply.accepted for item in self.replies)

    @property
    def all_permanent_failures(self) -> bool:
        return all(item.reply.permanent for item in self.replies)

    def client_reply(self) -> str:
        """What the gateway answers its own client at end of DATA (SPEC section 6).

        SMTP: the upstream's reply as is. Otherwise (LMTP, or SMTP with every RCPT
        refused) the first accepting reply if any recipient accepted, else the first 4xx
        (so the sender retries), else the first 5xx.
        """
        if self.transaction_reply is not None:
            return self.transaction_reply.render()
        replies = [item.reply for item in self.replies]
        chosen = next((r for r in replies if r.accepted), None)
        chosen = chosen or next((r for r in replies if r.temporary), None)
        return (chosen or replies[0]).render()


NO_SMTPUTF8 = Reply(550, "5.6.7 The list server does not support SMTPUTF8 (RFC 6531)")
BAD_SENDER = Reply(553, "5.1.7 The sender address cannot be relayed")
BAD_RECIPIENT = Reply(553, "5.1.3 The recipient address cannot be relayed")


class UpstreamUnavailable(GatewayError):
    """The upstream could not be reached or stopped answering before it took the post."""

    def __init__(self, upstream: HostPort, reason: str) -> None:
        super().__init__(f"upstream {upstream} unavailable: {reason}")
        self.upstream = upstream
        self.reason = reason


async def relay(
    upstream: HostPort,
    protocol: Literal["smtp", "lmtp"],
    *,
    mail_from: str,
    recipients: Sequence[str],
    data: bytes,
    eight_bit: bool,
    smtputf8: bool,
    helo_name: str,
    timeout: float,  # noqa: ASYNC109 -- bounds each step of the dialogue, not the whole call
    pool: UpstreamPool | None = None,
) -> RelayResult:
    """Relay one transaction; `data` is the whole message as the upstream should get it.

    `mail_from` is "" for the null sender. `timeout` bounds each step (connect, each
    write, each reply), as RFC 5321 section 4.5.3.2 times commands, not the whole.
    `data` arrives byte for byte: the transport dot-stuffs lines starting with "." and
    the upstream unstuffs them. A bare CR or LF (ingress has already normalised them)
    would become CRLF, as aiosmtplib does, so no upstream can read a line end differently.
    With a `pool`, an idle connection is used when there is one, and the connection
    waits there for the next post once the transaction has ended cleanly.
    """
    if not recipients:
        raise ValueError("relay needs at least one recipient")
    message = normalise_line_endings(data)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    key = (str(upstream), protocol, helo_name)
    attempt = functools.partial(
        _attempt,
        upstream=upstream,
        key=key,
        pool=pool,
        mail_from=mail_from,
        recipients=recipients,
        message=message,
        eight_bit=eight_bit,
        smtputf8=smtputf8,
    )
    waiting = pool.take(key) if pool is not None else None
    result: RelayResult | None = None
    if isinstance(waiting, _Session):
        waiting.timeout = timeout
        result = await attempt(waiting, reused=True)
    if result is None:
        kind = _LMTPSession if protocol == "lmtp" else _SMTPSession
        result = await attempt(kind(upstream, helo_name, timeout), reused=False)
    assert result is not None  # a fresh session answers or raises
    logs.event(
        log,
        logging.DEBUG,  # the list relay logs `relayed` for the same post at info
        "relay-done",
        upstream=str(upstream),
        protocol=protocol,
        accepted=len(result.accepted),
        deferred=len(result.deferred),
        refused=len(result.refused),
        reply=result.client_reply()[:3],
    )
    return result


async def _attempt(
    session: _Session,
    *,
    upstream: HostPort,
    key: tuple[str, str, str],
    pool: UpstreamPool | None,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    eight_bit: bool,
    smtputf8: bool,
    reused: bool,
) -> RelayResult | None:
    """The transaction on `session`; None when a reused session turns out to be closed
    before its MAIL was answered (nothing of the post was sent: try a fresh one)."""
    try:
        if not reused:
            await session.open()
        return await _transaction(session, mail_from, recipients, message, eight_bit, smtputf8)
    except SMTPHeloError as error:
        raise _unavailable(upstream, f"greeting refused with {error.code}") from error
    except _ServiceClosing as error:
        if reused and not session.answered:
            return None
        raise _unavailable(upstream, "421 service closing") from error
    except (SMTPException, OSError) as error:
        if reused and not session.answered:
            return None
        # Refused or lost connection, timeout, greeting other than 220, malformed reply.
        raise _unavailable(upstream, f"{type(error).__name__}: {error}") from error
    finally:
        if pool is not None and session.settled:
            session.answered = session.settled = False
            pool.give(key, session)
        else:
            await session.close()


async def _transaction(
    session: _Session,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    eight_bit: bool,
    smtputf8: bool,
) -> RelayResult:
    if smtputf8 and not session.client.supports_extension("smtputf8"):
        # RFC 6531 section 3.4: a message that needs SMTPUTF8 is never downgraded.
        return RelayResult.everyone(recipients, NO_SMTPUTF8)
    options = []
    if session.client.supports_extension("size"):
        options.append(f"SIZE={len(message)}")  # RFC 1870: the size as transmitted
    if eight_bit and session.client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if smtputf8:
        options.append("SMTPUTF8")
    encoding = "utf-8" if smtputf8 else "ascii"
    sender = await session.mail(mail_from, options, encoding)
    if not sender.accepted:
        return RelayResult.everyone(recipients, sender)
    replies = [await session.rcpt(address, encoding) for address in recipients]
    accepted = [index for index, reply in enumerate(replies) if reply.accepted]
    transaction: Reply | None = None
    if accepted:
        data_replies, transaction = await session.data(message, len(accepted))
        for index, reply in zip(accepted, data_replies, strict=True):
            replies[index] = reply
    pairs = zip(recipients, replies, strict=True)
    return RelayResult(tuple(RecipientReply(*pair) for pair in pairs), transaction)


def _unavailable(upstream: HostPort, reason: str) -> UpstreamUnavailable:
    logs.event(
        log, logging.WARNING, "relay-upstream-unavailable", upstream=str(upstream), reason=reason
    )
    return UpstreamUnavailable(upstream, reason)


class _ServiceClosing(Exception):
    """A 421 before the post was taken: the upstream is going away, so retry later."""


def _checked(reply: Reply) -> Reply:
    if reply.code == 421:
        raise _ServiceClosing(reply.text)
    return reply


class _Session:
    """MAIL and RCPT as replies; each protocol supplies open, data and close."""

    client: aiosmtplib.SMTP | LMTPClient
    # `answered`: the upstream replied to this transaction's MAIL, so the connection was
    # alive. `settled`: the DATA reply was read, so the connection may carry another post.
    answered = False
    settled = False

    async def mail(self, sender: str, options: list[str], encoding: str) -> Reply:
        try:
            reply = Reply.of(await self.client.mail(sender, options=options, encoding=encoding))
        except SMTPSenderRefused as error:
            # A 421 is the server going away (often its idle timeout, said to a pooled
            # connection), not an answer about this post.
            self.answered = error.code != 421
            return _checked(Reply(error.code, error.message))
        except ValueError:  # unsafe on a command line, or not ASCII without SMTPUTF8
            return BAD_SENDER
        self.answered = True
        return reply

    @property
    def timeout(self) -> float:
        return float(self.client.timeout or 0)

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.client.timeout = seconds

    @property
    def usable(self) -> bool:
        raise NotImplementedError

    async def rcpt(self, recipient: str, encoding: str) -> Reply:
        try:
            return Reply.of(await self.client.rcpt(recipient, encoding=encoding))
        except SMTPRecipientRefused as error:
            return _checked(Reply(error.code, error.message))
        except ValueError:
            return BAD_RECIPIENT

    async def open(self) -> None:
        raise NotImplementedError

    async def data(self, message: bytes, accepted: int) -> tuple[list[Reply], Reply | None]:
        """One reply per accepted recipient, and the SMTP transaction's single reply."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _SMTPSession(_Session):
    def __init__(self, upstream: HostPort, helo_name: str, timeout: float) -> None:
        # The upstream is the list server next door, spoken to in plain text: no STARTTLS.
        self.smtp = aiosmtplib.SMTP(
            hostname=upstream.host,
            port=upstream.port,
            local_hostname=helo_name,
            timeout=timeout,
            start_tls=False,
        )
        self.client = self.smtp

    async def open(self) -> None:
        await self.smtp.connect()
        try:
            await self.smtp.ehlo()
        except SMTPHeloError as error:
            if error.code == 421 or not self.smtp.is_connected:
                raise
            await self.smtp.helo()  # RFC 5321 section 3.2: an old server that lacks EHLO

    async def data(self, message: bytes, accepted: int) -> tuple[list[Reply], Reply | None]:
        try:
            reply = Reply.of(await self.smtp.data(message))
        except SMTPDataError as error:
            reply = _checked(Reply(error.code, error.message))
        self.settled = True
        return [reply] * accepted, reply

    @property
    def usable(self) -> bool:
        return self.smtp.is_connected

    async def close(self) -> None:
        try:
            if self.smtp.is_connected:
                await self.smtp.quit()
        except (SMTPException, OSError):
            pass  # the transaction is settled; a failed goodbye changes nothing
        finally:
            self.smtp.close()


class _LMTPSession(_Session):
    def __init__(self, upstream: HostPort, helo_name: str, timeout: float) -> None:
        self.lmtp = LMTPClient(
            upstream.host, upstream.port, local_hostname=helo_name, timeout=timeout
        )
        self.client = self.lmtp

    async def open(self) -> None:
        await self.lmtp.connect()
        await self.lmtp.lhlo()

    async def data(self, message: bytes, accepted: int) -> tuple[list[Reply], Reply | None]:
        try:
            responses = await self.lmtp.data(message, accepted=accepted)
        except SMTPDataError as error:
            # RFC 2033 section 4.2: a refused DATA command is one reply for everyone.
            return [_checked(Reply(error.code, error.message))] * accepted, None
        # A reply lost with the connection: the session carries nothing more.
        self.settled = REPLY_LOST not in responses
        return [Reply.of(response) for response in responses], None

    @property
    def usable(self) -> bool:
        return self.lmtp.connected

    async def close(self) -> None:
        await self.lmtp.quit()
