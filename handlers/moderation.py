"""conduct+moderate@: commands from moderators and staff, run after a confirmation round-trip."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from handlers import report_intake
from handlers.effects import (
    NEW,
    AddBan,
    Audit,
    CreateConfirmation,
    DecideHeld,
    Effect,
    Envelope,
    FileRequest,
    LiftBan,
    Origin,
    Outcome,
    RecordIncoming,
    SendMail,
    UseConfirmation,
)
from handlers.message import ParsedMessage
from handlers.snapshot import Policy, Snapshot
from rules import command_types as ct
from rules import loops
from rules.bans import BadPattern, parse_pattern, protected_hits
from rules.commands import CommandError, ParsedCommands, moderator_allowed, parse_commands
from rules.reply_text import new_text

CONFIRMATION_VALID = timedelta(days=7)


class _Refused(Exception):
    def __init__(self, line: int, text: str, reason: str) -> None:
        super().__init__(reason)
        self.error = CommandError(line, text, reason)


def _who(message: ParsedMessage, snapshot: Snapshot) -> tuple[bool, tuple[str, ...]]:
    """(is staff, lists moderated) of the From address."""
    assert snapshot.policy is not None
    sender = message.from_address or ""
    staff = snapshot.team.is_staff(sender)
    return staff, snapshot.policy.moderated_by(sender)


def _silently_refused(message: ParsedMessage, reason: str) -> Outcome:
    """Not a moderator or staff, not authenticated, automatic: recorded, no reply."""
    return Outcome(
        "moderate",
        "moderation-refused",
        (
            RecordIncoming(None, "command", "moderation-refused", message.from_address),
            Audit(None, "moderation-refused", message.from_address, {"reason": reason}),
        ),
    )


def _answer(message: ParsedMessage, text: str, *, confirm: bool = False) -> SendMail:
    """To the From address only (never envelope sender or Reply-To), with a null envelope."""
    sender = message.from_address or ""
    return SendMail(
        case=None,
        recipient=sender,
        written=message.from_written or sender,
        kind="result",
        template="moderation",
        params={"text": text},
        subject="Please confirm your commands" if confirm else "Your commands",
        envelope=Envelope.NULL,
        auto_submitted="auto-replied",
        references_incoming=True,
        reply_to_confirmation=confirm,
    )


def _checked(
    parsed: ParsedCommands, staff: bool, lists: tuple[str, ...], policy: Policy, snapshot: Snapshot
) -> None:
    """Moderators: only #ban, #unban, #release, #discard, on their own lists."""
    for number, (command, line) in enumerate(
        zip(parsed.commands, parsed.lines, strict=True), start=1
    ):
        if isinstance(command, ct.OnBehalf | ct.Ack):
            if not staff:
                raise _Refused(number, line, "only staff may report on someone's behalf")
            continue
        if not isinstance(command, ct.Ban | ct.Unban | ct.Release | ct.Discard):
            raise _Refused(
                number,
                line,
                "only #ban, #unban, #release, #discard and "
                "#on-behalf work here; reply to a case to change it",
            )
        if not staff and not moderator_allowed(command):
            raise _Refused(number, line, "moderators may only ban, unban, release or discard")
        if isinstance(command, ct.Ban | ct.Unban):
            if not staff and command.scope is ct.BanScope.ALL:
                raise _Refused(number, line, "list=all is for staff; name one of your lists")
            target = command.list_address
            if target is not None and not policy.serves(target):
                raise _Refused(number, line, f"{target} is not a list this gateway serves")
            if not staff and target is not None and target not in lists:
                raise _Refused(number, line, f"you do not moderate {target}")
        if isinstance(command, ct.Ban):
            try:
                pattern = parse_pattern(command.pattern)
            except BadPattern as error:
                raise _Refused(number, line, error.reason) from None
            team = snapshot.team
            protected = [p.address for p in team.staff] + [
                team.director.address,
                team.conduct_address,
            ]
            hits = protected_hits(pattern, protected, policy.local_domains)
            if hits:
                raise _Refused(number, line, "; ".join(hits))


def request(message: ParsedMessage, snapshot: Snapshot, now: datetime) -> Outcome:
    """Check the commands, keep them pending, and ask the sender to confirm."""
    policy = snapshot.policy
    assert policy is not None
    staff, lists = _who(message, snapshot)
    if loops.is_automatic(message.loop):
        return _silently_refused(message, "automatic")
    if not staff and not lists:
        return _silently_refused(message, "not-moderator-or-staff")
    if policy.require_dkim and not snapshot.dkim_passed:
        return _silently_refused(message, "dkim-failed")
    text = new_text(message.text)
    parsed = parse_commands(text, sender=message.from_address or "", tz=policy.zone, now=now)
    try:
        if isinstance(parsed, CommandError):
            raise _Refused(parsed.line, parsed.text, parsed.reason)
        if not parsed.commands:
            raise _Refused(1, "", "no command lines (lines starting with #) at the top")
        _checked(parsed, staff, lists, policy, snapshot)
    except _Refused as refused:
        return Outcome(
            "moderate",
            "moderation",
            (
                RecordIncoming(None, "command", "moderation", message.from_address),
                _refusal_audit(message.from_address, refused.error),
                _answer(message, _nothing_done(refused.error)),
            ),
        )
    quoted = "\n".join(f"  {line}" for line in parsed.lines)
    return Outcome(
        "moderate",
        "moderation",
        (
            RecordIncoming(None, "command", "moderation", message.from_address),
            CreateConfirmation(message.from_address or "", text, now + CONFIRMATION_VALID),
            Audit(
                None, "moderation-requested", message.from_address, {"lines": list(parsed.lines)}
            ),
            _answer(
                message,
                "These commands are waiting for your confirmation:\n\n"
                f"{quoted}\n\nReply to this message (any text) within 7 days to run "
                "them. If you did not send them, ignore this message.",
                confirm=True,
            ),
        ),
    )


def refused_by_store(message: ParsedMessage, snapshot: Snapshot, error: CommandError) -> Outcome:
    """A confirmed command the database refused (unknown held post or ban, already banned):
    nothing of it applies, the confirmation is used up, the sender is told which line."""
    pending = snapshot.confirmation
    assert pending is not None
    return Outcome(
        "moderate",
        "confirmation",
        (
            RecordIncoming(None, "command", "confirmation", message.from_address),
            UseConfirmation(pending.id),
            _refusal_audit(pending.sender, error),
            _answer(message, _nothing_done(error)),
        ),
    )


def _refusal_audit(sender: str | None, error: CommandError) -> Audit:
    return Audit(
        None,
        "commands-refused",
        sender,
        {"line": error.line, "text": error.text, "reason": error.reason},
    )


def _nothing_done(error: CommandError) -> str:
    return f"Nothing was done: line {error.line} cannot apply.\n\n{error.text}\n  -> {error.reason}"


def _bans(
    command: ct.Ban, staff: bool, lists: tuple[str, ...], sender: str, origin: Origin
) -> list[Effect]:
    if command.scope is ct.BanScope.LIST:
        targets: list[str | None] = [command.list_address]
    elif staff:
        targets = [None]
    else:
        targets = list(lists)  # a moderator's own lists
    pattern = str(parse_pattern(command.pattern))
    return [
        AddBan(None, pattern, target, command.until, command.reason, sender, False, origin)
        for target in targets
    ]


def confirm(message: ParsedMessage, snapshot: Snapshot, now: datetime) -> Outcome | None:
    """Run the pending commands; None: not the same sender, so it is ordinary conduct mail."""
    pending = snapshot.confirmation
    policy = snapshot.policy
    assert policy is not None
    if pending is None or message.from_address != pending.sender:
        return None
    if loops.is_automatic(message.loop):
        return _silently_refused(message, "automatic-confirmation")
    if policy.require_dkim and not snapshot.dkim_passed:
        return _silently_refused(message, "dkim-failed")
    staff, lists = _who(message, snapshot)
    parsed = parse_commands(pending.commands, sender=pending.sender, tz=policy.zone, now=now)
    if isinstance(parsed, CommandError) or not (staff or lists):
        return _silently_refused(message, "no-longer-allowed")
    try:
        _checked(parsed, staff, lists, policy, snapshot)
    except _Refused as refused:
        return _silently_refused(message, refused.error.reason)
    allowed = None if staff else lists
    effects: list[Effect] = [
        RecordIncoming(None, "command", "confirmation", message.from_address),
        UseConfirmation(pending.id),
        Audit(None, "moderation-confirmed", pending.sender, {"lines": list(parsed.lines)}),
    ]
    for number, (command, line) in enumerate(
        zip(parsed.commands, parsed.lines, strict=True), start=1
    ):
        origin = Origin(number, line)
        if isinstance(command, ct.Ban):
            effects += _bans(command, staff, lists, pending.sender, origin)
        elif isinstance(command, ct.Unban):
            ban_id = int(command.ban_id) if command.ban_id and command.ban_id.isdigit() else None
            pattern = str(parse_pattern(command.pattern)) if command.pattern else None
            effects.append(
                LiftBan(
                    ban_id,
                    pattern,
                    command.list_address,
                    pending.sender,
                    allowed,
                    origin,
                    policy.retention,
                )
            )
        elif isinstance(command, ct.Release | ct.Discard):
            effects.append(
                DecideHeld(
                    command.held_id,
                    isinstance(command, ct.Release),
                    pending.sender,
                    allowed,
                    origin,
                )
            )
    if parsed.on_behalf is not None:
        effects += _on_behalf(message, snapshot, parsed, now)
    effects.append(_answer(message, "Done:\n\n" + "\n".join(f"  {line}" for line in parsed.lines)))
    return Outcome("moderate", "confirmation", tuple(effects))


def _on_behalf(
    message: ParsedMessage, snapshot: Snapshot, parsed: ParsedCommands, now: datetime
) -> list[Effect]:
    """A case whose reporter is ADDRESS and whose report is the rest of the request's body
    (forwarded blocks and all): the request is filed, never the confirmation."""
    command = parsed.on_behalf
    pending = snapshot.confirmation
    assert command is not None
    assert pending is not None
    assert snapshot.policy is not None
    request = pending.request or message
    text = parsed.text
    if pending.request is not None:
        full = parse_commands(request.text, sender=pending.sender, tz=snapshot.policy.zone, now=now)
        text = full.text if isinstance(full, ParsedCommands) else text
    report = replace(
        request,
        from_address=command.address,
        from_written=command.written,
        from_name="",
        header_text="",
        text=text,
        loop=replace(
            request.loop,
            envelope_sender=command.written if parsed.acknowledge else None,
            auto_submitted=None,
        ),
    )
    intake = report_intake.Intake("on-behalf", None, False, now)
    outcome = report_intake.intake(report, snapshot, intake)
    # The reporter's thread must not name the staff member's Message-IDs (SPEC section 4).
    kept: list[Effect] = [
        replace(e, references_incoming=False) if isinstance(e, SendMail) else e
        for e in outcome.effects
        if not isinstance(e, RecordIncoming)
    ]
    filed: Effect = (
        FileRequest(NEW, text, pending.sender)
        if pending.request is not None
        else RecordIncoming(NEW, "report", "on-behalf", pending.sender)
    )
    return [
        *kept,
        filed,
        Audit(NEW, "reported-on-behalf", pending.sender, {"reporter": command.address}),
    ]
