"""The list relay behind the ingress: bans at RCPT and DATA, then the before-queue relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from gateway import logs, relay
from gateway.ban_cache import BanCache
from gateway.config import Settings
from gateway.list_gate import IncomingEnvelope
from gateway.list_records import ListRecords, needs_smtputf8, trace_field
from gateway.metrics import Metrics
from gateway.secret import Secrets
from gateway.upstream_pool import UpstreamPool
from handlers.list_posts import ListTarget, ListVerdict, NoContact, decide
from handlers.outcome import Verdict
from rules.addresses import AddressError, normalise
from rules.list_identities import Identities, IdentityProblem, identities
from rules.refusals import posting_refused
from rules.retry import DeliveryResult
from rules.routing import Route
from storage import no_contact, relayed
from storage.db import Database
from storage.outbox import OutgoingMail

log = logs.get("lists")
UPSTREAM_DOWN = "451 4.4.1 The list server is not available; try again later"
HELD_REPLY = "250 2.0.0 Ok: held for moderation"
DISCARDED_REPLY = "250 2.0.0 Ok"
RELAY_STEP_TIMEOUT = 120.0
DEADLINE_SHARE = 0.8  # of [smtp] timeout, for the whole relay of one post
T = TypeVar("T")
REFRESH_SECONDS = 1.0


class ListService:
    """Implements the ingress's ListGate; a Component that keeps its no-contact map fresh."""

    name = "list-relay"

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        bans: BanCache,
        secrets: Secrets,
        clock: Callable[[], datetime],
        on_mail: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(clock)
        self.database = database
        self.bans = bans
        self.clock = clock
        self.records = ListRecords(settings, database, secrets, clock, on_mail)
        self._no_contact: dict[str, frozenset[str]] = {}
        self._relayed: list[tuple[str, str, str, datetime]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Idle connections to the list server, for the next post or outbox copy.
        self.pool = UpstreamPool()

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._maintain(), name="list-relay")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._flush()
        await self.pool.close()

    async def _maintain(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REFRESH_SECONDS)
            self.pool.sweep()
            try:
                await self._flush()
                await self._refresh()
            except Exception as error:
                logs.event(
                    log,
                    logging.ERROR,
                    "list-maintenance-failed",
                    error=type(error).__name__,
                    exc_info=error,
                )

    async def _refresh(self) -> None:
        def load() -> dict[str, frozenset[str]]:
            with self.database.transaction() as session:
                return no_contact.protected_by_accused(session, self.clock())

        self._no_contact = await asyncio.to_thread(load)

    async def _flush(self) -> None:
        """The relayed-post index is written in batches (SPEC section 2 allows losing the
        last seconds of it in a crash: it only serves no-contact holds)."""
        batch, self._relayed = self._relayed, []
        if not batch:
            return

        def write() -> None:
            with self.database.transaction() as session:
                relayed.record_many(session, batch)

        await asyncio.to_thread(write)

    # -- RCPT -----------------------------------------------------------------------

    async def check_envelope(self, sender: str, route: Route) -> str | None:
        """Refuse a banned envelope sender at RCPT when `ban_action = reject`."""
        settings = self.settings()
        if not sender or not route.bans_apply or route.list_address is None:
            return None
        ban = self.bans.index.match(sender, route.list_address, self.clock())
        if ban is None:
            return None
        logs.event(
            log,
            logging.INFO,
            "ban-hit",
            identity="envelope",
            ban=ban.id,
            list=route.list_address,
            stage="rcpt",
        )
        if settings.relay.ban_action != "reject":
            return None  # hold or discard: decided with the headers at DATA
        self.metrics.ban_hits(["envelope"])  # hold and discard count theirs at DATA
        await asyncio.to_thread(
            self.records.ban_hit, "envelope", ban.id, route.list_address, "reject"
        )
        return posting_refused([route.list_address], ban.expires_at, settings.reminders.timezone)

    # -- DATA -----------------------------------------------------------------------

    async def deliver(
        self,
        envelope: IncomingEnvelope,
        routes: Sequence[Route],
        raw: bytes,
    ) -> str:
        settings = self.settings()
        deadline = time.monotonic() + relay_budget(settings)
        found = identities(raw)
        if isinstance(found, IdentityProblem):
            logs.event(log, logging.INFO, "list-post-refused", rule=found.reason)
            return self.metrics.list_reply(found.reply)
        now = self.clock()
        targets = [
            ListTarget(r.list_address or r.recipient, r.recipient, r.bans_apply) for r in routes
        ]
        referenced = await self._referenced_senders(found, envelope.mail_from)
        decision = decide(
            envelope_sender=envelope.mail_from,
            found=found,
            targets=targets,
            ban_action=settings.relay.ban_action,
            lookup=self.bans.index.match,
            no_contact=NoContact(self._no_contact, referenced),
            now=now,
            zone=settings.reminders.timezone,
        )
        if any(v.verdict is not Verdict.ACCEPT for v in decision.verdicts):
            await asyncio.to_thread(self.records.record, decision, envelope, raw, found, now)
        for verdict in decision.verdicts:
            logs.event(
                log,
                # A permitted post is logged once, as `relayed`; decisions that hold,
                # discard or refuse are events of their own.
                logging.INFO if verdict.verdict is not Verdict.ACCEPT else logging.DEBUG,
                "list-decision",
                list=verdict.target.list_address,
                verdict=verdict.verdict.value,
                rule=verdict.rule,
                bans=",".join(str(h.ban.id) for h in verdict.hits) or None,
                identities=",".join(h.identity for h in verdict.hits) or None,
                message_id=found.message_id,
            )
        self.metrics.ban_hits(h.identity for v in decision.verdicts for h in v.hits)
        if decision.reply is not None:
            return self.metrics.list_reply(decision.reply)
        accepted = decision.with_verdict(Verdict.ACCEPT)
        if not accepted:
            held_any = decision.with_verdict(Verdict.HOLD)
            self.metrics.list_post("held" if held_any else "discarded")
            return HELD_REPLY if held_any else DISCARDED_REPLY
        return await self._relay(settings, envelope, accepted, raw, found, now, deadline)

    async def _referenced_senders(self, found: Identities, sender: str) -> dict[str, str]:
        """Look up earlier posts only for a sender under a no-contact sanction."""
        people = {*found.from_addresses, *found.sender_addresses}
        with contextlib.suppress(AddressError):
            if sender:
                people.add(normalise(sender))
        if not found.references or not people & set(self._no_contact):
            return {}

        def load() -> dict[str, str]:
            with self.database.transaction() as session:
                return relayed.senders_of(session, found.references)

        return await asyncio.to_thread(load)

    async def _relay(
        self,
        settings: Settings,
        envelope: IncomingEnvelope,
        accepted: Sequence[ListVerdict],
        raw: bytes,
        found: Identities,
        now: datetime,
        deadline: float,
    ) -> str:
        recipients = [v.target.recipient for v in accepted]
        data = trace_field(settings, envelope, recipients, now) + raw
        started = time.monotonic()
        budget = max(deadline - started, 0.0)
        attempt = asyncio.ensure_future(
            relay.relay(
                settings.relay.upstream,
                "lmtp" if settings.relay.upstream_protocol == "lmtp" else "smtp",
                mail_from=envelope.mail_from,
                recipients=recipients,
                data=data,
                eight_bit=not data.isascii(),
                smtputf8=envelope.smtputf8,
                helo_name=settings.smtp.hostname,
                timeout=min(RELAY_STEP_TIMEOUT, max(budget, 1.0)),
                pool=self.pool,
            )
        )
        try:
            result = await _within(attempt, budget)
        except relay.UpstreamUnavailable as error:
            logs.event(log, logging.WARNING, "upstream-unavailable", reason=error.reason)
            return self.metrics.list_reply(UPSTREAM_DOWN)
        except TimeoutError:
            logs.event(
                log,
                logging.WARNING,
                "upstream-unavailable",
                reason="relay-deadline",
                seconds=round(time.monotonic() - started, 1),
                message_id=found.message_id,
            )
            return self.metrics.list_reply(UPSTREAM_DOWN)
        self.metrics.relayed(time.monotonic() - started)
        logs.event(
            log,
            logging.INFO,
            "relayed",
            message_id=found.message_id,
            accepted=len(result.accepted),
            deferred=len(result.deferred),
            refused=len(result.refused),
            seconds=round(time.monotonic() - started, 4),
        )
        sender = found.from_addresses[0] if found.from_addresses else ""
        if found.message_id and sender:
            by_recipient = {v.target.recipient: v.target.list_address for v in accepted}
            self._relayed.extend(
                (found.message_id, sender, by_recipient[r], now) for r in result.accepted
            )
        if result.any_accepted and (result.deferred or result.refused):
            await asyncio.to_thread(
                self.records.after_partial, envelope, data, result, accepted, now
            )
        return self.metrics.list_reply(result.client_reply())

    # -- the sender's route to the list server ----------------------------------------

    async def deliver_upstream(self, mail: OutgoingMail) -> DeliveryResult:
        """For outbox rows with route `upstream`: released held posts, LMTP deferrals."""
        settings = self.settings()
        result = await relay.relay(
            settings.relay.upstream,
            "lmtp" if settings.relay.upstream_protocol == "lmtp" else "smtp",
            mail_from=mail.envelope_sender,
            recipients=[mail.recipient],
            data=mail.raw,
            eight_bit=not mail.raw.isascii(),
            smtputf8=needs_smtputf8(mail.envelope_sender, mail.recipient, mail.raw),
            helo_name=settings.smtp.hostname,
            timeout=RELAY_STEP_TIMEOUT,
            pool=self.pool,
        )
        reply = result.replies[0].reply
        return DeliveryResult.from_reply(reply.code, reply.text)

    def upstream_failed(
        self, session: Session, mail: OutgoingMail, error: str, now: datetime
    ) -> None:
        """The sender's hook for an outbox copy the list server refused for good."""
        self.records.upstream_failed(session, mail, error, now)


def relay_budget(settings: Settings) -> float:
    """Seconds a post's whole relay may take before the client gets `451 4.4.1`.

    aiosmtpd restarts its idle timer only when the client sends, so a relay that outlasts
    `[smtp] timeout` would see the client dropped mid-reply (and its retry post twice).
    Step timeouts alone (RFC 5321 section 4.5.3.2) add up past it; one deadline does not.
    """
    return settings.smtp.timeout.total_seconds() * DEADLINE_SHARE


async def _within(attempt: asyncio.Future[T], seconds: float) -> T:
    """The attempt's result, or TimeoutError after `seconds`; a late attempt is cancelled
    and left to close its connection on its own, so the answer is never later."""
    try:
        done, _ = await asyncio.wait({attempt}, timeout=seconds)
    finally:
        if not attempt.done():
            attempt.cancel()
            attempt.add_done_callback(_forget)
    if not done:
        raise TimeoutError
    return attempt.result()


def _forget(attempt: asyncio.Future[Any]) -> None:
    if not attempt.cancelled():
        attempt.exception()  # retrieved: a late failure is no one's to report
