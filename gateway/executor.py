"""Executes a handler's Outcome: every effect of one message in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from gateway import executor_commands as commands
from gateway.secret import Secrets
from handlers import templates
from handlers.compose import Envelope as Headers
from handlers.compose import compose
from handlers.effects import (
    NEW,
    AddBan,
    AddParticipant,
    AddSanction,
    AddTimer,
    Audit,
    CaseRef,
    CreateConfirmation,
    DecideHeld,
    Effect,
    Envelope,
    ExtendRetention,
    FileRequest,
    LiftBan,
    MarkOutboxFailed,
    MergeCase,
    OpenCase,
    Outcome,
    RecordIncoming,
    SendMail,
    SetRecused,
    UpdateCase,
    UseConfirmation,
    message_kind,
)
from handlers.message import ParsedMessage
from rules import tokens
from storage import audit, cases, confirmations, outbox
from storage.models import OutboxEntry


@dataclass(frozen=True)
class Source:
    """The received message whose outcome is being applied."""

    inbox_id: int | None
    raw: bytes
    parsed: ParsedMessage
    recipients: tuple[str, ...]
    # A confirmation's request: what `#on-behalf` files, and what its copies carry.
    request: Source | None = None


@dataclass
class Applied:
    case: int | None = None
    mails: list[int] = field(default_factory=list)
    confirm_token: str | None = None
    last_ban: int | None = None  # the ban an AddBan just added, for its ban-end AddTimer


@dataclass(frozen=True)
class MailIdentity:
    conduct_address: str
    case_tag: str
    secrets: Secrets
    staff: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.conduct_address.rpartition("@")[2]


class Executor:
    def __init__(self, identity: MailIdentity) -> None:
        self.identity = identity

    def apply(
        self,
        session: Session,
        outcome: Outcome,
        source: Source,
        now: datetime,
    ) -> Applied:
        applied = Applied()
        for effect in outcome.effects:
            self._apply(session, effect, source, now, applied)
        return applied

    def _case(self, ref: CaseRef | None, applied: Applied) -> int | None:
        if ref == NEW:
            if applied.case is None:
                raise ValueError("an effect names the new case before OpenCase")
            return applied.case
        assert ref is None or isinstance(ref, int)
        return ref

    def _apply(
        self, session: Session, effect: Effect, source: Source, now: datetime, applied: Applied
    ) -> None:
        if isinstance(effect, OpenCase):
            applied.case = cases.open_case(
                session,
                now=now,
                subject=effect.subject,
                urgent=effect.urgent,
                possibly_related=effect.possibly_related,
                imported=effect.imported,
                status=effect.status,
                director_only=effect.director_only,
            )
        elif isinstance(effect, AddParticipant):
            case = self._case(effect.case, applied)
            assert case is not None
            cases.add_participant(
                session,
                case=case,
                address=effect.address,
                written=effect.written,
                name=effect.name,
                role=effect.role,
                recused=effect.recused,
                now=now,
            )
        elif isinstance(effect, RecordIncoming):
            parsed = source.parsed
            cases.record_message(
                session,
                cases.NewMessage(
                    case=self._case(effect.case, applied),
                    direction="in",
                    kind=effect.kind,
                    at=now,
                    message_id=parsed.message_id,
                    sender=parsed.from_address,
                    recipients=source.recipients,
                    party=effect.party,
                    subject=parsed.subject,
                    text=parsed.text,
                    raw=source.raw,
                    rule=effect.rule,
                    inbox_id=source.inbox_id,
                ),
            )
        elif isinstance(effect, UpdateCase):
            case = self._case(effect.case, applied)
            assert case is not None
            cases.update_case(session, case, effect.changes, now)
            if "expunge_at" in effect.changes:
                commands.follow_merged_expunge(session, case)
        elif isinstance(effect, Audit):
            audit.append(
                session,
                at=now,
                action=effect.action,
                actor=effect.actor,
                case=self._case(effect.case, applied),
                detail=dict(effect.detail),
            )
        elif isinstance(effect, SendMail):
            applied.mails.append(self._send(session, effect, source, now, applied))
        elif isinstance(effect, MarkOutboxFailed):
            self._bounced(session, effect, now)
        else:
            self._command_effect(session, effect, source, now, applied)

    def _command_effect(
        self, session: Session, effect: Effect, source: Source, now: datetime, applied: Applied
    ) -> None:
        if isinstance(effect, SetRecused):
            case = self._case(effect.case, applied)
            assert case is not None
            commands.set_recused(session, effect, case, now)
        elif isinstance(effect, AddBan):
            applied.last_ban = commands.add_ban(
                session, effect, self._case(effect.case, applied), now
            )
        elif isinstance(effect, LiftBan):
            commands.lift_ban(session, effect, now)
        elif isinstance(effect, AddSanction):
            case = self._case(effect.case, applied)
            assert case is not None
            commands.add_sanction(session, effect, case, now)
        elif isinstance(effect, AddTimer):
            case = self._case(effect.case, applied)
            commands.add_timer(session, effect, case, now, applied.last_ban)
        elif isinstance(effect, DecideHeld):
            commands.decide_held(session, effect, now)
        elif isinstance(effect, MergeCase):
            into = self._case(effect.into, applied)
            assert into is not None
            commands.merge_case(session, effect, into, now)
        elif isinstance(effect, CreateConfirmation):
            applied.confirm_token = tokens.new_confirm_token()
            confirmations.create(
                session,
                token=applied.confirm_token,
                sender=effect.sender,
                commands=effect.commands,
                inbox_id=source.inbox_id,  # the request, filed by #on-behalf
                now=now,
                expires=effect.expires,
            )
        elif isinstance(effect, UseConfirmation):
            if not confirmations.use(session, effect.confirmation_id, now):
                # Another instance used it a moment ago: retried, then it is conduct mail.
                raise RuntimeError("confirmation already used")
        elif isinstance(effect, FileRequest):
            case = self._case(effect.case, applied)
            assert case is not None
            self._file_request(session, effect, case, source, now)
        elif isinstance(effect, ExtendRetention):
            case = self._case(effect.case, applied)
            assert case is not None
            commands.extend_retention(session, effect, case, now)

    def _file_request(
        self, session: Session, effect: FileRequest, case: int, source: Source, now: datetime
    ) -> None:
        """The request was filed unfiled when it arrived; it moves to the case it opened."""
        request = source.request
        assert request is not None, "FileRequest needs the confirmation's request"
        if not commands.file_request(session, request.inbox_id, case, effect.text, effect.party):
            cases.record_message(
                session,
                cases.NewMessage(
                    case=case,
                    direction="in",
                    kind="report",
                    at=now,
                    message_id=request.parsed.message_id,
                    sender=request.parsed.from_address,
                    recipients=request.recipients,
                    party=effect.party,
                    subject=request.parsed.subject,
                    text=effect.text,
                    raw=request.raw,
                    rule="on-behalf",
                    inbox_id=request.inbox_id,
                ),
            )

    def _subject(self, mail: SendMail, case: int | None) -> str:
        tag = self.identity.case_tag
        if case is None:
            return mail.subject or f"A message from the {tag} team"
        # Only staff see another participant's Subject (SPEC section 4).
        text = mail.subject if mail.subject is not None else f"A message from the {tag} team"
        return f"[{tag} #{case}] {text}"

    def _send(
        self, session: Session, mail: SendMail, source: Source, now: datetime, applied: Applied
    ) -> int:
        case = self._case(mail.case, applied)
        identity = self.identity
        message_id = tokens.new_message_id(identity.domain)
        reply_to = None
        thread: list[str] = []
        if mail.reply_to_confirmation:
            assert applied.confirm_token is not None, "CreateConfirmation comes first"
            reply_to = tokens.subaddress_for(
                identity.conduct_address, tokens.Confirm(applied.confirm_token)
            )
        elif case is not None:
            token = tokens.reply_token(identity.secrets.current, case, mail.recipient)
            reply_to = tokens.signed_address(identity.conduct_address, case, token)
        if case is not None:
            thread = cases.thread_of(session, case, mail.recipient)
        incoming_id = source.parsed.message_id if mail.references_incoming else None
        references = [*thread, incoming_id] if incoming_id else thread
        tag = identity.case_tag
        headers = Headers(
            from_name=f"{mail.via_name} via {tag}" if mail.via_name else tag,
            from_address=identity.conduct_address,
            to=mail.written,
            subject=self._subject(mail, case),
            message_id=message_id,
            date=now,
            reply_to=reply_to,
            in_reply_to=references[-1] if references else None,
            references=references,
            auto_submitted=mail.auto_submitted,
        )
        params = {"case": str(case) if case is not None else "-", "case_tag": tag, **mail.params}
        body = templates.render(mail.template, params)
        original = source.request or source
        raw = compose(headers, body, original.raw if mail.carries_original else None)
        bounce_id = tokens.new_bounce_id() if mail.envelope is Envelope.BOUNCE else None
        envelope_sender = (
            ""
            if bounce_id is None
            else tokens.subaddress_for(identity.conduct_address, tokens.Bounce(bounce_id))
        )
        outbox_id = outbox.enqueue(
            session,
            outbox.NewMail(
                kind=mail.kind,
                envelope_sender=envelope_sender,
                recipient=mail.written,
                message_id=message_id,
                raw=raw,
                case=case,
                automatic=mail.automatic,
                bounce_id=bounce_id,
                caused_by=mail.caused_by,
            ),
            now,
        )
        cases.record_message(
            session,
            cases.NewMessage(
                case=case,
                direction="out",
                kind=message_kind(mail.kind),
                at=now,
                message_id=message_id,
                sender=identity.conduct_address,
                recipients=(mail.written,),
                party=mail.recipient,
                subject=headers.subject,
                rule=None,
                outbox_id=outbox_id,
            ),
        )
        return outbox_id

    def _bounced(self, session: Session, effect: MarkOutboxFailed, now: datetime) -> None:
        """Mark the answered outbox entry failed; the handler decided who is told."""
        entry = session.get(OutboxEntry, effect.outbox_id)
        if entry is None:
            return
        entry.state = outbox.FAILED
        entry.last_error = effect.status[:2000]
        audit.append(
            session,
            at=now,
            action="outbox-bounced",
            actor=None,
            case=entry.case_number,
            detail={"outbox_id": entry.id},
        )
