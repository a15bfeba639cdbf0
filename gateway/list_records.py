"""What the list relay stores: ban hits, holds, discards, owed retries and moderators' notices."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import logs, parsing, relay, snapshot_builder
from gateway.config import Settings
from gateway.executor import Executor, Source
from gateway.list_gate import IncomingEnvelope
from gateway.processing import identity
from gateway.secret import Secrets
from handlers import reminders as staff_mail
from handlers.effects import Effect, Outcome, SendMail
from handlers.list_posts import ListDecision, ListVerdict
from handlers.message import ParsedMessage
from handlers.outcome import Verdict
from rules import reminders, tokens
from rules.addresses import normalise
from rules.list_identities import Identities
from rules.message_keys import dedup_key, split_message
from rules.routing import RoutingTable, route
from rules.trace import received_field
from storage import audit, cases, held, no_contact, outbox
from storage.db import Database
from storage.outbox import OutgoingMail

log = logs.get("lists")


def trace_field(
    settings: Settings, envelope: IncomingEnvelope, recipients: Sequence[str], now: datetime
) -> bytes:
    """The one `Received:` field a post gets on its way to the list server, relayed or held."""
    ip = envelope.peer.rpartition(":")[0] or envelope.peer
    return received_field(
        from_helo=envelope.helo,
        from_ip=ip,
        by_host=settings.smtp.hostname,
        protocol="ESMTP",
        queue_id=None,
        recipient=recipients[0] if len(recipients) == 1 else None,
        now=now,
    )


def needs_smtputf8(sender: str, recipient: str, raw: bytes) -> bool:
    """RFC 6531/6532: a UTF-8 envelope address or UTF-8 header field needs SMTPUTF8.

    Used for posts relayed from the outbox, whose client's own MAIL parameters are gone.
    Header bytes that are not UTF-8 (legacy 8-bit) need only 8BITMIME, as the direct relay
    would have passed them.
    """
    if not (sender + recipient).isascii():
        return True
    header, _ = split_message(raw)
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _case_staff(session: Session, settings: Settings, case: int) -> list[str]:
    """Who hears of a post held by a case's ban: the case's staff who have not recused, and on
    a director-only case the director alone (as its reminders go). A purged case has no
    recusals left to keep: all staff."""
    view = cases.views(session, [case]).get(case)
    team = snapshot_builder.team_from(settings)
    if view is None:
        return [p.address for p in team.staff]
    return [p.address for p in staff_mail.audience(view, team, reminders.STAFF, None)]


class ListRecords:
    """The database side of list decisions, each call one transaction (run off the event loop)."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        secrets: Secrets,
        clock: Callable[[], datetime],
        on_mail: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.database = database
        self.secrets = secrets
        self.clock = clock
        self.on_mail = on_mail

    def ban_hit(self, identity_kind: str, ban_id: int, list_address: str, verdict: str) -> None:
        """A ban that refused a sender at RCPT (or in the policy service)."""
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

    def record(
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
        holds: dict[str, list[ListVerdict]] = {}
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
                    holds.setdefault(verdict.target.list_address, []).append(verdict)
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
            key = dedup_key(raw) if holds else ""
            for verdicts in holds.values():
                self._hold(session, settings, verdicts, envelope, raw, found, key, now)

    def _hold(
        self,
        session: Session,
        settings: Settings,
        verdicts: Sequence[ListVerdict],
        envelope: IncomingEnvelope,
        raw: bytes,
        found: Identities,
        key: str,
        now: datetime,
    ) -> None:
        """One held post per list, with every address of that list the post was sent to."""
        first = verdicts[0]
        list_address = first.target.list_address
        ban = first.hits[0].ban if first.hits else None
        before = held.held_already(session, list_address, key)
        if before is not None:
            # The client retries (another list deferred the message): held and announced
            # already, so neither again.
            logs.event(
                log, logging.INFO, "post-held-before", held=before, message_id=found.message_id
            )
            return
        recipients = list(dict.fromkeys(v.target.recipient for v in verdicts))
        reason = f"ban {ban.id}" if ban is not None else first.rule
        case = ban.case if ban is not None else None
        if first.accused is not None:  # a no-contact hold (handlers/list_posts.decide)
            # The accused wrote to someone the sanction protects: the case's staff need
            # to know, as they would of a post held by the case's ban (SPEC section 6).
            accused = [first.accused]
            case = next(iter(no_contact.cases_of_accused(session, accused, now)), None)
        parsed = parsing.parse(raw, envelope.mail_from or None)
        held_id = held.hold(
            session,
            list_address=list_address,
            sender=found.from_addresses[0] if found.from_addresses else None,
            subject=parsed.subject,
            reason=reason,
            ban_id=ban.id if ban else None,
            case=case,
            envelope_sender=envelope.mail_from or None,
            envelope_recipients=recipients,
            # Released later, it reaches the list server as a relayed post would have.
            raw=trace_field(settings, envelope, recipients, now) + raw,
            now=now,
            message_key=key,
        )
        logs.event(
            log,
            logging.INFO,
            "post-held",
            held=held_id,
            list=list_address,
            ban=ban.id if ban else None,
            rule=first.rule,
            message_id=found.message_id,
        )
        audience = list(settings.moderators.get(list_address, ()))
        if case is not None:
            audience += _case_staff(session, settings, case)
        params = {
            "list": list_address,
            "held_id": str(held_id),
            "reason": reason,
            "sender": parsed.from_written or "(none)",
            "subject": parsed.subject or "(no subject)",
            "held_at": now.isoformat(timespec="seconds"),
            "hold_days": str(settings.relay.hold_days),
        }
        subject = f"Held post {held_id} to {list_address}"
        self._announce(session, settings, audience, "held-post", params, subject, raw, parsed)

    def after_partial(
        self,
        envelope: IncomingEnvelope,
        data: bytes,
        result: relay.RelayResult,
        accepted: Sequence[ListVerdict],
        now: datetime,
    ) -> None:
        """LMTP answered per recipient: deferred copies go to the outbox (retried there);
        refusals are recorded and told to the list's moderators, never to the sender."""
        settings = self.settings()
        lists = {v.target.recipient: v.target.list_address for v in accepted}
        domain = settings.gateway.conduct_address.rpartition("@")[2]
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
                if item.reply.permanent:
                    list_address = lists.get(item.recipient, item.recipient)
                    self._refused(session, settings, list_address, item.reply.render(), data, now)
        if result.deferred:
            self.on_mail()

    def upstream_failed(
        self, session: Session, mail: OutgoingMail, error: str, now: datetime
    ) -> None:
        """An outbox copy (LMTP deferral, released post) the list server will not take."""
        settings = self.settings()
        table = RoutingTable.build(
            conduct_address=settings.gateway.conduct_address,
            local_domains=settings.gateway.local_domains,
            lists=settings.relay.lists,
            list_domains=settings.relay.list_domains,
            postmaster=settings.gateway.postmaster,
        )
        list_address = route(table, mail.recipient).list_address or mail.recipient
        self._refused(session, settings, list_address, error, mail.raw, now)

    def _refused(
        self,
        session: Session,
        settings: Settings,
        list_address: str,
        reply: str,
        data: bytes,
        now: datetime,
    ) -> None:
        audit.append(
            session,
            at=now,
            action="upstream-refused",
            actor="gateway",
            detail={"list": list_address, "code": int(reply[:3]) if reply[:3].isdigit() else None},
        )
        parsed = parsing.parse(data, None)
        self._announce(
            session,
            settings,
            settings.moderators.get(list_address, ()),
            "upstream-refused",
            {
                "list": list_address,
                "reply": reply,
                "sender": parsed.from_written or "(none)",
                "subject": parsed.subject or "(no subject)",
                "at": now.isoformat(timespec="seconds"),
            },
            f"Refused by the list server: post to {list_address}",
            data,
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
