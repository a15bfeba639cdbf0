"""The list relay behind the ingress: bans at RCPT and DATA, holds, discards, before-queue relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import logs, parsing, relay
from gateway.ban_cache import BanCache
from gateway.config import Settings
from gateway.executor import Executor, Source
from gateway.list_gate import IncomingEnvelope
from gateway.metrics import Metrics
from gateway.processing import identity
from gateway.secret import Secrets
from handlers.effects import Effect, Outcome, SendMail
from handlers.list_posts import ListDecision, ListTarget, ListVerdict, NoContact, decide
from handlers.message import ParsedMessage
from handlers.outcome import Verdict
from rules import tokens
from rules.addresses import AddressError, normalise
from rules.list_identities import Identities, IdentityProblem, identities
from rules.refusals import posting_refused
from rules.retry import DeliveryResult
from rules.routing import Route
from rules.trace import received_field
from storage import audit, held, no_contact, outbox, relayed
from storage.db import Database
from storage.outbox import OutgoingMail

log = logs.get("lists")
UPSTREAM_DOWN = "451 4.4.1 The list server is not available; try again later"
HELD_REPLY = "250 2.0.0 Ok: held for moderation"
DISCARDED_REPLY = "250 2.0.0 Ok"
RELAY_STEP_TIMEOUT = 120.0
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
        self.secrets = secrets
        self.clock = clock
        self.on_mail = on_mail
        self._no_contact: dict[str, frozenset[str]] = {}
        self._relayed: list[tuple[str, str, str, datetime]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._maintain(), name="list-relay")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._flush()

    async def _maintain(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REFRESH_SECONDS)
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
        await self._audit_hit("envelope", ban.id, route.list_address, "reject")
        return posting_refused([route.list_address], ban.expires_at, settings.reminders.timezone)

    async def _audit_hit(
        self, identity_kind: str, ban_id: int, list_address: str, verdict: str
    ) -> None:
        def write() -> None:
            with self.database.transaction() as session:
                audit.append(
                    session,
                    at=self.clock(),
                    action="ban-hit",
                    actor="gateway",
                    detail={
                        "identity": identity_kind,
                        "ban": ban_id,
                        "list": list_address,
                        "verdict": verdict,
                    },
                )

        await asyncio.to_thread(write)

    # -- DATA -----------------------------------------------------------------------

    async def deliver(
        self,
        envelope: IncomingEnvelope,
        routes: Sequence[Route],
        raw: bytes,
    ) -> str:
        found = identities(raw)
        if isinstance(found, IdentityProblem):
            logs.event(log, logging.INFO, "list-post-refused", rule=found.reason)
            return self.metrics.list_reply(found.reply)
        settings = self.settings()
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
            await asyncio.to_thread(self._record, decision, envelope, raw, found, now)
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
        return await self._relay(settings, envelope, accepted, raw, found, now)

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

    def _record(
        self,
        decision: ListDecision,
        envelope: IncomingEnvelope,
        raw: bytes,
        found: Identities,
        now: datetime,
    ) -> None:
        """Held and discarded posts, and every ban hit, in one transaction."""
        interesting = [v for v in decision.verdicts if v.verdict is not Verdict.ACCEPT]
        if not interesting:
            return
        settings = self.settings()
        with self.database.transaction() as session:
            for verdict in interesting:
                for hit in verdict.hits:
                    audit.append(
                        session,
                        at=now,
                        action="ban-hit",
                        actor="gateway",
                        case=hit.ban.case,
                        detail={
                            "identity": hit.identity,
                            "ban": hit.ban.id,
                            "list": verdict.target.list_address,
                            "verdict": verdict.verdict.value,
                        },
                    )
                if verdict.verdict is Verdict.HOLD:
                    self._hold(session, settings, verdict, envelope, raw, found, now)
                elif verdict.verdict is Verdict.DISCARD:
                    audit.append(
                        session,
                        at=now,
                        action="post-discarded",
                        actor="gateway",
                        detail={
                            "list": verdict.target.list_address,
                            "message_id": found.message_id,
                            "rule": verdict.rule,
                        },
                    )

    def _hold(
        self,
        session: Session,
        settings: Settings,
        verdict: ListVerdict,
        envelope: IncomingEnvelope,
        raw: bytes,
        found: Identities,
        now: datetime,
    ) -> None:
        ban = verdict.hits[0].ban if verdict.hits else None
        reason = f"ban {ban.id}" if ban is not None else verdict.rule
        parsed = parsing.parse(raw, envelope.mail_from or None)
        held_id = held.hold(
            session,
            list_address=verdict.target.list_address,
            sender=found.from_addresses[0] if found.from_addresses else None,
            subject=parsed.subject,
            reason=reason,
            ban_id=ban.id if ban else None,
            case=ban.case if ban else None,
            envelope_sender=envelope.mail_from or None,
            envelope_recipients=[verdict.target.recipient],
            raw=raw,
            now=now,
        )
        logs.event(
            log,
            logging.INFO,
            "post-held",
            held=held_id,
            list=verdict.target.list_address,
            ban=ban.id if ban else None,
            rule=verdict.rule,
            message_id=found.message_id,
        )
        audience = list(settings.moderators.get(verdict.target.list_address, ()))
        if ban is not None and ban.case is not None:
            audience += [p.address for p in settings.gateway.staff]
        params = {
            "list": verdict.target.list_address,
            "held_id": str(held_id),
            "reason": reason,
            "sender": parsed.from_written or "(none)",
            "subject": parsed.subject or "(no subject)",
            "held_at": now.isoformat(timespec="seconds"),
            "hold_days": str(settings.relay.hold_days),
        }
        self._announce(
            session,
            settings,
            audience,
            "held-post",
            params,
            f"Held post {held_id} to {verdict.target.list_address}",
            raw,
            parsed,
        )

    def _announce(
        self,
        session: Session,
        settings: Settings,
        audience: Sequence[str],
        template: str,
        params: dict[str, str],
        subject: str,
        raw: bytes,
        parsed: ParsedMessage,
    ) -> None:
        effects: list[Effect] = [
            SendMail(
                case=None,
                recipient=normalise(person),
                written=person,
                kind="notification",
                template=template,
                params=params,
                subject=subject,
                carries_original=True,
            )
            for person in dict.fromkeys(audience)
        ]
        if effects:
            Executor(identity(settings, self.secrets)).apply(
                session,
                Outcome("list", template, tuple(effects)),
                Source(None, raw, parsed, ()),
                self.clock(),
            )
            self.on_mail()

    async def _relay(
        self,
        settings: Settings,
        envelope: IncomingEnvelope,
        accepted: Sequence[ListVerdict],
        raw: bytes,
        found: Identities,
        now: datetime,
    ) -> str:
        recipients = [v.target.recipient for v in accepted]
        ip = envelope.peer.rpartition(":")[0] or envelope.peer
        trace = received_field(
            from_helo=envelope.helo,
            from_ip=ip,
            by_host=settings.smtp.hostname,
            protocol="ESMTP",
            queue_id=None,
            recipient=recipients[0] if len(recipients) == 1 else None,
            now=now,
        )
        data = trace + raw
        started = time.monotonic()
        try:
            result = await relay.relay(
                settings.relay.upstream,
                "lmtp" if settings.relay.upstream_protocol == "lmtp" else "smtp",
                mail_from=envelope.mail_from,
                recipients=recipients,
                data=data,
                eight_bit=not data.isascii(),
                smtputf8=envelope.smtputf8,
                helo_name=settings.smtp.hostname,
                timeout=RELAY_STEP_TIMEOUT,
            )
        except relay.UpstreamUnavailable as error:
            logs.event(log, logging.WARNING, "upstream-unavailable", reason=error.reason)
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
                self._after_partial, settings, envelope, data, result, accepted, now
            )
        return self.metrics.list_reply(result.client_reply())

    def _after_partial(
        self,
        settings: Settings,
        envelope: IncomingEnvelope,
        data: bytes,
        result: relay.RelayResult,
        accepted: Sequence[ListVerdict],
        now: datetime,
    ) -> None:
        """LMTP answered per recipient: deferred copies go to the outbox (retried there);
        refusals are recorded and told to the list's moderators, never to the sender."""
        lists = {v.target.recipient: v.target.list_address for v in accepted}
        domain = settings.gateway.conduct_address.rpartition("@")[2]
        parsed = parsing.parse(data, envelope.mail_from or None)
        with self.database.transaction() as session:
            for recipient in result.deferred:
                outbox.enqueue(
                    session,
                    outbox.NewMail(
                        kind="list-post",
                        envelope_sender=envelope.mail_from,
                        recipient=recipient,
                        message_id=tokens.new_message_id(domain),
                        raw=data,
                        route="upstream",
                    ),
                    now,
                )
            for item in result.replies:
                if not item.reply.permanent:
                    continue
                list_address = lists.get(item.recipient, item.recipient)
                audit.append(
                    session,
                    at=now,
                    action="upstream-refused",
                    actor="gateway",
                    detail={"list": list_address, "code": item.reply.code},
                )
                self._announce(
                    session,
                    settings,
                    settings.moderators.get(list_address, ()),
                    "upstream-refused",
                    {
                        "list": list_address,
                        "reply": item.reply.render(),
                        "sender": parsed.from_written or "(none)",
                        "subject": parsed.subject or "(no subject)",
                        "at": now.isoformat(timespec="seconds"),
                    },
                    f"Refused by the list server: post to {list_address}",
                    data,
                    parsed,
                )
        if result.deferred:
            self.on_mail()

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
            smtputf8=False,
            helo_name=settings.smtp.hostname,
            timeout=RELAY_STEP_TIMEOUT,
        )
        reply = result.replies[0].reply
        return DeliveryResult.from_reply(reply.code, reply.text)
