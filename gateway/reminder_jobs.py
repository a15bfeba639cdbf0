"""The scheduler's work on the database: reminders, timers, the digest, housekeeping."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from gateway import parsing, snapshot_builder
from gateway.config import Settings
from gateway.executor import Executor, Source
from gateway.processing import identity
from gateway.secret import Secrets
from handlers import reminders as mails
from handlers.effects import Outcome, SendMail
from rules import reminders
from storage import audit, cases, held, leases, meta, relayed
from storage.db import Database
from storage.models import AuditEvent, Case, HeldPost, InboxEntry, Message, OutboxEntry, Timer

PERIODIC = ("acknowledge", "urgent", "escalate", "follow-up")
ONE_OFF = ("remind", "ban-end", "sanction-end")
DIGEST_KEY = "digest_last"
RETENTION_KEY = "retention_last"
# Every refusal of a command, silent or answered (the digest's "refused commands").
REFUSALS = ("command-refused", "commands-refused", "moderation-refused")
NO_SOURCE = Source(None, b"", parsing.parse(b"", None), ())


class Jobs:
    """Each method is one transaction, run in a worker thread by the scheduler."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        database: Database,
        secrets: Secrets,
        lease: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.secrets = secrets
        self.lease = lease  # (name, holder): tick works only while it is held

    def _send(self, session: Session, effects: list[SendMail], now: datetime) -> int:
        if effects:
            Executor(identity(self.settings(), self.secrets)).apply(
                session, Outcome("reminder", "reminder", tuple(effects)), NO_SOURCE, now
            )
        return len(effects)

    def tick(self, now: datetime) -> int:
        """Periodic reminders and due one-off timers; returns the mails queued.

        With a lease, it is re-checked (and its row locked) inside this transaction: an
        instance that lost leadership since its last renewal sends nothing.
        """
        with self.database.transaction() as session:
            if self.lease is not None and not leases.still_held(
                session, *self.lease, leases.database_time(session, now)
            ):
                return 0
            return self._periodic(session, now) + self._one_offs(session, now)

    def _clocks(self, session: Session) -> list[reminders.CaseClock]:
        rows = (
            session.execute(
                select(Case).where(
                    Case.status != "closed", Case.merged_into.is_(None), Case.purged_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
        numbers = [row.number for row in rows]
        fired: dict[int, dict[str, datetime]] = defaultdict(dict)
        for case, kind, last in session.execute(
            select(Timer.case_number, Timer.kind, func.max(Timer.fired_at))
            .where(
                Timer.case_number.in_(numbers),
                Timer.kind.in_(PERIODIC),
                Timer.fired_at.is_not(None),
            )
            .group_by(Timer.case_number, Timer.kind)
        ):
            if case is not None and last is not None:
                fired[case][kind] = last
        replied: dict[int, datetime] = {
            case: at
            for case, at in session.execute(
                select(Message.case_number, func.max(Message.at))
                .where(
                    Message.case_number.in_(numbers),
                    Message.direction == "out",
                    Message.kind == "reply",
                )
                .group_by(Message.case_number)
            )
            if case is not None
        }
        urgent_since = self._urgent_since(session, [row.number for row in rows if row.urgent])
        return [
            reminders.CaseClock(
                number=row.number,
                status=row.status,
                urgent=row.urgent,
                escalated=row.escalated_at is not None,
                imported=row.imported,
                created_at=row.created_at,
                first_staff_mail_at=row.first_staff_mail_at,
                last_activity_at=row.last_activity_at,
                last_fired=fired.get(row.number, {}),
                urgent_since=urgent_since.get(row.number),
                last_reply_at=replied.get(row.number),
            )
            for row in rows
        ]

    def _urgent_since(self, session: Session, numbers: list[int]) -> dict[int, datetime]:
        """When each urgent case last got `#urgent` (absent: urgent since intake)."""
        since: dict[int, datetime] = {}
        if not numbers:
            return since
        for case, at, detail in session.execute(
            select(AuditEvent.case_number, AuditEvent.at, AuditEvent.detail)
            .where(AuditEvent.case_number.in_(numbers), AuditEvent.action == "commands-applied")
            .order_by(AuditEvent.seq)
        ):
            lines = json.loads(detail).get("lines") if detail else None
            if case is not None and lines and reminders.urgent_switch(lines, at):
                since[case] = at
        return since

    def _periodic(self, session: Session, now: datetime) -> int:
        settings = self.settings()
        r = settings.reminders
        periods = reminders.Periods(
            r.acknowledge_within, r.urgent_repeat, r.escalate_within, r.follow_up_after
        )
        due = [d for clock in self._clocks(session) for d in reminders.due(clock, periods, now)]
        if not due:
            return 0
        team = snapshot_builder.team_from(settings)
        views = cases.views(session, {d.case for d in due})
        effects: list[SendMail] = []
        for item in due:
            view = views.get(item.case)
            if view is not None:
                effects += mails.reminder_mails(item, view, team, now, r.timezone)
            session.add(
                Timer(
                    kind=item.kind, case_number=item.case, due_at=now, created_at=now, fired_at=now
                )
            )
            audit.append(
                session,
                at=now,
                action="reminder",
                actor="gateway",
                case=item.case,
                detail={"kind": item.kind},
            )
        return self._send(session, effects, now)

    def _one_offs(self, session: Session, now: datetime) -> int:
        settings = self.settings()
        team = snapshot_builder.team_from(settings)
        timers = (
            session.execute(
                select(Timer)
                .where(
                    Timer.kind.in_(ONE_OFF),
                    Timer.fired_at.is_(None),
                    Timer.cancelled_at.is_(None),
                    Timer.due_at <= now,
                )
                .with_for_update()
            )
            .scalars()
            .all()
        )
        if not timers:
            return 0
        views = cases.views(session, {t.case_number for t in timers if t.case_number})
        effects: list[SendMail] = []
        for timer in timers:
            view = views.get(timer.case_number) if timer.case_number else None
            effects += mails.timer_mails(
                timer.kind,
                view,
                team,
                timer.recipient,
                timer.note,
                settings.reminders.timezone,
                now,
            )
            timer.fired_at = now
        return self._send(session, effects, now)

    def digest(self, now: datetime) -> int:
        """Send the digest now, whatever the last one was."""
        with self.database.transaction() as session:
            return self._digest(session, now)

    def _digest(self, session: Session, now: datetime) -> int:
        settings = self.settings()
        facts = self._digest_facts(session, now)
        team = snapshot_builder.team_from(settings)
        sent = self._send(
            session, mails.digest_mails(facts, team, now, settings.reminders.timezone), now
        )
        meta.put(session, DIGEST_KEY, now.isoformat())
        return sent

    def digest_if_due(self, previous_due: datetime, now: datetime) -> int:
        """The digest due at `previous_due`, unless one went since; a digest missed while
        the gateway was down is sent once at start, and a new install has missed nothing
        (its first digest is the next one). The check, the mails and the mark are one
        transaction under the meta lock, so two looks never both send it."""
        with self.database.transaction() as session:
            meta.hold(session)
            last = meta.get(session, DIGEST_KEY)
            if last is None:
                meta.put(session, DIGEST_KEY, now.isoformat())
                return 0
            if datetime.fromisoformat(last) >= previous_due:
                return 0
            return self._digest(session, now)

    def claim_daily(self, key: str, previous_due: datetime, now: datetime) -> bool:
        """True once per daily due time (and at once on a store that never ran it): the
        caller runs the job. Claimed, not done: a run that fails waits for the next day."""
        with self.database.transaction() as session:
            meta.hold(session)
            last = meta.get(session, key)
            if last is not None and datetime.fromisoformat(last) >= previous_due:
                return False
            meta.put(session, key, now.isoformat())
            return True

    def _digest_facts(self, session: Session, now: datetime) -> mails.DigestFacts:
        day = now - timedelta(days=1)
        open_cases = (
            session.execute(
                select(Case).where(
                    Case.status != "closed", Case.merged_into.is_(None), Case.purged_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
        views = cases.views(session, [c.number for c in open_cases])
        listed = [
            mails.DigestCase(
                c.number,
                c.status,
                c.subject or "",
                c.created_at,
                frozenset(p.address for p in views[c.number].participants if p.kept_out)
                if c.number in views
                else frozenset(),
                director_only=c.director_only,
            )
            for c in open_cases
        ]

        def count(query: Select[int]) -> int:
            return int(session.execute(query).scalar_one())

        report = audit.verify_chain(session)
        return mails.DigestFacts(
            cases=listed,
            held=count(select(func.count()).select_from(HeldPost).where(HeldPost.state == "held")),
            failed_mail=count(
                select(func.count())
                .select_from(OutboxEntry)
                .where(OutboxEntry.state == "failed", OutboxEntry.created_at >= now - timedelta(7))
            ),
            quarantined=count(
                select(func.count()).select_from(InboxEntry).where(InboxEntry.state == "failed")
            ),
            unfiled=count(
                select(func.count())
                .select_from(Message)
                .where(Message.case_number.is_(None), Message.direction == "in", Message.at >= day)
            ),
            refused_commands=count(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.action.in_(REFUSALS),
                    AuditEvent.at >= day,
                )
            ),
            audit_count=report.count,
            audit_link=report.latest_link,
        )

    def housekeeping(self, now: datetime) -> None:
        """Held posts past hold_days are discarded; the relayed-post index keeps 90 days."""
        settings = self.settings()
        with self.database.transaction() as session:
            held.expire(session, now - timedelta(days=settings.relay.hold_days), now)
            relayed.prune(session, now - relayed.RETENTION)
