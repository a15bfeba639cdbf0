"""The outbox sender: claims owed mail, hands it to the smarthost or a Maildir, records how it went.

At least once (SPEC section 2): a row is leased while it is delivered and marked sent
only after the smarthost's 250. A crash between the two leaves the lease to expire,
and the row is sent again, byte for byte, so with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import logs, maildir_writer
from gateway.config import OutboundSettings, Settings
from rules.retry import GIVE_UP_AFTER, DeliveryResult, Phase, expired, next_attempt
from storage import outbox
from storage.db import Database
from storage.models import OutboxEntry
from storage.outbox import OutgoingMail

__all__ = ["DeliveryResult", "OutboxSender", "Upstream", "UpstreamFailed", "send_smtp"]

log = logs.get("sender")

Upstream = Callable[[OutgoingMail], Awaitable[DeliveryResult]]
# Told, in the transaction that marks it failed, of an upstream row that failed for good.
UpstreamFailed = Callable[[Session, OutgoingMail, str, datetime], None]

# A pass claims only as many rows as it delivers at once, each bounded by
# DELIVERY_DEADLINE, so no lease runs out while its row waits or is in flight; a pass
# that stalled after its claim renews it before sending, or leaves the row to whoever
# claimed it since. A row whose sender died is taken by another worker once its lease
# has run out.
CLAIM_LEASE = timedelta(minutes=15)
DELIVERY_DEADLINE = 600.0  # seconds, whole attempt
PARALLEL = 4
WAKE_EVERY = 1.0  # seconds: owed mail reaches the smarthost within 5 s (SPEC section 2)
SMTP_TIMEOUT = 120.0  # seconds per command; RFC 5321 section 4.5.3.2 allows minutes
STOP_GRACE = 30.0  # seconds for in-flight deliveries to finish on stop
STALE = "claim-ended"  # what a pass records when another instance had taken the row


@dataclass(frozen=True)
class _Due:
    mail: OutgoingMail
    created_at: datetime


class OutboxSender:
    """Component "sender": a loop that delivers due outbox rows, a few in parallel."""

    name = "sender"

    def __init__(
        self,
        settings_provider: Callable[[], Settings],
        database: Database,
        clock: Callable[[], datetime],
        upstream: Upstream | None = None,
        *,
        upstream_failed: UpstreamFailed | None = None,
        give_up_after: timedelta = GIVE_UP_AFTER,
        lease: timedelta = CLAIM_LEASE,
        parallel: int = PARALLEL,
    ) -> None:
        self._settings = settings_provider
        self._database = database
        self._clock = clock
        self._upstream = upstream
        self._upstream_failed = upstream_failed
        self._give_up_after = give_up_after
        self._lease = lease
        self._parallel = parallel
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.delivered_total = 0
        self.deferred_total = 0
        self.failed_total = 0  # for conduct_gateway_outbox_failed_total

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # SPEC section 8: pending mail is "also retried at start", whatever its back-off.
        await asyncio.to_thread(self._retry_all_now, self._clock())
        self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
        except TimeoutError:
            # Rows still in flight keep their lease and are retried when it expires.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """Deliver now: new rows were committed. Safe to call from any thread."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
            self._loop.call_soon_threadsafe(self._wake.set)

    async def deliver_once(self) -> int:
        """One pass: claim due rows, deliver them, record each result; returns how many."""
        settings = self._settings()
        due = await asyncio.to_thread(self._claim, self._clock())
        await asyncio.gather(*(self._deliver(item, settings) for item in due))
        return len(due)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            count = 0
            try:
                count = await self.deliver_once()
            except Exception:
                # A database outage must not end the loop; the next pass tries again.
                logs.event(log, logging.ERROR, "sender-pass-failed", exc_info=True)
            if count >= self._parallel:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WAKE_EVERY)

    async def _deliver(self, item: _Due, settings: Settings) -> None:
        if not _lease_covers_an_attempt(item.mail, self._clock()):
            # This pass stalled between its claim and now (a paused VM, a starved thread
            # pool): another instance may have claimed the row since, and sent it.
            renewed = await asyncio.to_thread(self._renew, item.mail)
            if renewed is None:
                logs.event(log, logging.DEBUG, "stale-claim-skipped", **_fields(item.mail))
                return
            item = _Due(renewed, item.created_at)
        result = await self._attempt(item.mail, settings)
        try:
            event, retry_at = await asyncio.to_thread(
                self._record, item, result, settings.outbound.retry_after, self._clock()
            )
        except Exception:
            # Delivered (perhaps) but not recorded: the lease expires and the row is
            # tried again, with the same bytes and Message-ID (SPEC section 2).
            logs.event(
                log,
                logging.ERROR,
                "sender-record-failed",
                exc_info=True,
                **_fields(item.mail, outcome=result.outcome),
            )
            return
        self._log(event, item.mail, result, retry_at)

    async def _attempt(self, mail: OutgoingMail, settings: Settings) -> DeliveryResult:
        try:
            async with asyncio.timeout(DELIVERY_DEADLINE):
                return await self._attempt_route(mail, settings)
        except Exception as error:
            # Never lose mail to a surprise: retry with back-off until the give-up age.
            return DeliveryResult("temporary", None, f"{type(error).__name__}: {error}")

    async def _attempt_route(self, mail: OutgoingMail, settings: Settings) -> DeliveryResult:
        if not mail.raw or not mail.recipient:
            # Retention blanks a purged case's mail and waits for it to be settled first
            # (storage/purge.py); should a blank row still come up, an empty file or
            # `RCPT TO:<>` would be recorded as the mail sent. It is failed, and says why.
            return DeliveryResult("permanent", None, "nothing to deliver: the mail was purged")
        if mail.route == "upstream":
            if self._upstream is None:
                return DeliveryResult("temporary", None, "no upstream relay configured")
            return await self._upstream(mail)
        outbound = settings.outbound
        if outbound.maildir is not None:
            path = await asyncio.to_thread(
                maildir_writer.deliver, outbound.maildir, mail.raw, self._clock()
            )
            return DeliveryResult("sent", None, f"written to {path.name}")
        password = await asyncio.to_thread(_read_password, outbound.password_file)
        return await send_smtp(mail, outbound, settings.smtp.hostname, password)

    def _claim(self, now: datetime) -> list[_Due]:
        with self._database.transaction() as session:
            mails = outbox.claim_due(session, now, self._lease, self._parallel)
            created = _created_at(session, [mail.id for mail in mails])
        return [_Due(mail, created[mail.id]) for mail in mails]

    def _renew(self, mail: OutgoingMail) -> OutgoingMail | None:
        with self._database.transaction() as session:
            return outbox.renew(session, mail, self._clock(), self._lease)

    def _record(
        self, item: _Due, result: DeliveryResult, retry_after: timedelta, now: datetime
    ) -> tuple[str, datetime | None]:
        mail = item.mail
        error = f"{result.code} {result.detail}" if result.code else result.detail
        with self._database.transaction() as session:
            if result.outcome == "sent":
                return ("delivered" if outbox.mark_sent(session, mail, now) else STALE), None
            if result.outcome == "permanent":
                return self._fail(session, mail, error, now, "failed"), None
            if expired(item.created_at, now, self._give_up_after):
                gave_up = f"gave up after {self._give_up_after}: {error}"
                return self._fail(session, mail, gave_up, now, "gave-up"), None
            retry_at = next_attempt(mail.attempts, retry_after, now)
            if not outbox.mark_retry(session, mail, error, retry_at):
                return STALE, None
            return "deferred", retry_at

    def _fail(
        self, session: Session, mail: OutgoingMail, error: str, now: datetime, event: str
    ) -> str:
        if not outbox.mark_failed(session, mail, error):
            return STALE
        if mail.route == "upstream" and self._upstream_failed is not None:
            # SPEC section 6: a list post the list server refuses for good is told to the
            # list's moderators, in this same transaction, never bounced to its sender.
            self._upstream_failed(session, mail, error, now)
        return event

    def _retry_all_now(self, now: datetime) -> None:
        with self._database.transaction() as session:
            session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.state == outbox.PENDING, OutboxEntry.next_attempt_at > now)
                .values(next_attempt_at=now)
            )

    def _log(
        self, event: str, mail: OutgoingMail, result: DeliveryResult, retry_at: datetime | None
    ) -> None:
        if event == STALE:
            # The claim ran out during the attempt and another instance took the row: its
            # record stands. Had both delivered, the recipient has it twice, with the same
            # Message-ID (SPEC section 2).
            level = logging.WARNING if result.outcome == "sent" else logging.DEBUG
            logs.event(log, level, STALE, outcome=result.outcome, **_fields(mail))
            return
        if event == "delivered":
            self.delivered_total += 1
            level = logging.INFO
        elif event == "deferred":
            self.deferred_total += 1
            level = logging.INFO
        else:
            self.failed_total += 1
            level = logging.WARNING
        fields = _fields(mail, code=result.code, attempt=mail.attempts + 1)
        if retry_at is not None:
            fields["retry_at"] = retry_at.isoformat()
        if event == "gave-up":
            event, fields["reason"] = "failed", "gave-up"
        logs.event(log, level, event, **fields)
        # The recipient, and replies that can quote addresses: only in a debug line of
        # their own, never on the info line (SPEC section 10).
        logs.event(
            log,
            logging.DEBUG,
            "delivery-detail",
            outbox_id=mail.id,
            recipient=mail.recipient,
            detail=result.detail,
        )


def _lease_covers_an_attempt(mail: OutgoingMail, now: datetime) -> bool:
    """Whether `mail`'s claim outlasts a whole attempt begun now, so that no other instance
    (its clock in step with ours) can claim the row before the attempt is recorded."""
    if mail.claimed_until is None:
        return False
    return mail.claimed_until - now >= timedelta(seconds=DELIVERY_DEADLINE)


def _fields(mail: OutgoingMail, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "outbox_id": mail.id,
        "message_id": mail.message_id,
        "kind": mail.kind,
        "route": mail.route,
        "case": mail.case,
    }
    fields.update(more)
    return fields


def _created_at(session: Session, ids: list[int]) -> dict[int, datetime]:
    # OutgoingMail does not carry created_at; the give-up age needs it.
    if not ids:
        return {}
    rows = session.execute(
        select(OutboxEntry.id, OutboxEntry.created_at).where(OutboxEntry.id.in_(ids))
    )
    return {row.id: row.created_at for row in rows}


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").rstrip("\r\n")


# --- SMTP to the smarthost -------------------------------------------------------------


async def send_smtp(
    mail: OutgoingMail, outbound: OutboundSettings, helo_name: str, password: str | None
) -> DeliveryResult:
    """One SMTP transaction: MAIL FROM:<envelope_sender>, RCPT TO:<recipient>, DATA raw."""
    if outbound.smarthost is None:
        return DeliveryResult("temporary", None, "no smarthost configured")
    client = aiosmtplib.SMTP(
        hostname=outbound.smarthost.host,
        port=outbound.smarthost.port,
        local_hostname=helo_name,
        timeout=SMTP_TIMEOUT,
        start_tls=False,  # decided below, per [outbound] tls
    )
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError) as error:
        code = error.code if isinstance(error, aiosmtplib.SMTPResponseException) else None
        return DeliveryResult.from_reply(code, f"connect: {error}", "session")
    try:
        return await _session(client, mail, outbound, password)
    finally:
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit(timeout=5)
        client.close()


async def _session(
    client: aiosmtplib.SMTP, mail: OutgoingMail, outbound: OutboundSettings, password: str | None
) -> DeliveryResult:
    phase: Phase = "session"
    try:
        await _hello(client)
        refused = await _secure(client, outbound)
        if refused is not None:
            return refused
        if outbound.username is not None and password is not None:
            if outbound.tls != "none" and client.get_transport_info("sslcontext") is None:
                # As Postfix's default noplaintext: no password over a cleartext link
                # unless the operator said tls = none (e.g. a smarthost on loopback).
                return DeliveryResult("temporary", None, "no TLS: credentials not sent")
            await client.login(outbound.username, password)
        phase = "transaction"
        reply = await client.execute_command(
            b"MAIL", b"FROM:<" + mail.envelope_sender.encode() + b">", *_mail_options(client, mail)
        )
        if not 200 <= reply.code < 300:
            return DeliveryResult.from_reply(reply.code, f"MAIL: {reply.message}")
        phase = "rcpt"
        reply = await client.execute_command(b"RCPT", b"TO:<" + mail.recipient.encode() + b">")
        if not 200 <= reply.code < 300:
            return DeliveryResult.from_reply(reply.code, f"RCPT: {reply.message}", phase)
        phase = "transaction"
        # Lines are already CRLF-terminated: aiosmtplib only dot-stuffs them (RFC 5321 4.5.2).
        reply = await client.data(mail.raw)
        return DeliveryResult("sent", reply.code, reply.message)
    except aiosmtplib.SMTPResponseException as error:
        return DeliveryResult.from_reply(error.code, error.message, phase)
    except (aiosmtplib.SMTPException, OSError) as error:  # ssl.SSLError is an OSError
        return DeliveryResult("temporary", None, f"{type(error).__name__}: {error}")
    except ValueError as error:
        # aiosmtplib refuses control characters in an envelope address: no retry fixes that.
        return DeliveryResult("permanent", None, f"envelope refused: {error}")


async def _hello(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _secure(client: aiosmtplib.SMTP, outbound: OutboundSettings) -> DeliveryResult | None:
    """STARTTLS per [outbound] tls; a DeliveryResult when the session cannot go on."""
    if outbound.tls == "none":
        return None
    offered = client.supports_extension("starttls")
    if not offered:
        if outbound.tls == "required":
            return DeliveryResult("temporary", None, "STARTTLS required but not offered")
        return None
    await client.starttls(tls_context=_tls_context(outbound.tls))
    await _hello(client)  # RFC 3207 section 4.2: forget what was said before TLS
    return None


def _tls_context(level: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if level == "opportunistic":
        # RFC 7435 opportunistic security (Postfix "may"): encrypt against passive
        # eavesdropping; an unverified certificate is still better than cleartext.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _mail_options(client: aiosmtplib.SMTP, mail: OutgoingMail) -> list[bytes]:
    options: list[bytes] = []
    if not mail.raw.isascii() and client.supports_extension("8bitmime"):
        options.append(b"BODY=8BITMIME")  # RFC 6152
    if not (mail.envelope_sender + mail.recipient).isascii() and client.supports_extension(
        "smtputf8"
    ):
        options.append(b"SMTPUTF8")  # RFC 6531
    return options
