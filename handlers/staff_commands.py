"""Staff commands on a case (SPEC section 5): authorised, validated together, all or nothing."""

from __future__ import annotations

import hmac
from datetime import datetime

from handlers import templates
from handlers.command_plans import PLANNERS, Context, Refused, Working
from handlers.correspondence import staff_audience
from handlers.effects import (
    AddParticipant,
    Audit,
    Effect,
    Envelope,
    Origin,
    Outcome,
    RecordIncoming,
    SendMail,
    UpdateCase,
)
from handlers.message import ParsedMessage
from handlers.snapshot import STAFF_ROLES, CaseView, Policy, Snapshot
from rules import command_types as ct
from rules.commands import CommandError, ParsedCommands
from rules.naming import addresses_in

OUTGOING = (ct.Reply, ct.To, ct.NotifyAccused)


def unauthorised_reason(
    message: ParsedMessage, snapshot: Snapshot, case: CaseView, policy: Policy
) -> str | None:
    """Why this mail may not command the case, or None when it may (SPEC "Who may command")."""
    sender = message.from_address or ""
    signed = snapshot.signed
    # The token must be the sender's own: compared in constant time, never via Reply-To.
    if (
        signed is None
        or signed.case != case.number
        or not hmac.compare_digest(signed.owner.encode(), sender.encode())
    ):
        return "token-not-senders"
    team = snapshot.team
    if team.is_director(sender):
        if not (case.escalated or case.urgent):
            return "director-not-escalated"
    elif not team.is_staff(sender):
        return "not-staff"
    elif case.director_only:
        return "director-only"  # staff configured after it opened are not recused, yet out
    party = case.participant(sender)
    if party is not None and party.role not in STAFF_ROLES:
        return "party-to-case"  # its accused, say, who joined the staff since: kept out
    if case.recused(sender):
        return "recused"
    if policy.require_dkim and not snapshot.dkim_passed:
        return "dkim-failed"
    return None


def refused_silently(
    message: ParsedMessage,
    case: CaseView,
    rule: str,
    reason: str,
) -> Outcome:
    """Forged or unauthorised commands: recorded, listed in the digest, no reply, no change."""
    return Outcome(
        "command",
        "command-refused",
        (
            RecordIncoming(None, "command", "command-refused", message.from_address),
            Audit(
                case.number,
                "command-refused",
                message.from_address,
                {"reason": reason, "rule": rule},
            ),
        ),
    )


def _result_mail(message: ParsedMessage, case: CaseView, sender: str, text: str) -> SendMail:
    """Results go to the From address only, never the envelope sender or Reply-To."""
    return SendMail(
        case=case.number,
        recipient=sender,
        written=message.from_written or sender,
        kind="result",
        template="command-result",
        params={"results": text},
        subject=f"Commands: {message.subject or case.subject or 'case'}",
        envelope=Envelope.NULL,
        auto_submitted="auto-replied",
        references_incoming=True,
    )


def _outgoing(
    c: Context, command: ct.Reply | ct.To | ct.NotifyAccused, text: str, message: ParsedMessage
) -> tuple[list[Effect], str]:
    state = c.state
    if isinstance(command, ct.Reply):
        targets = state.with_role("reporter")
        if not targets:
            raise Refused("this case has no reporter address to reply to")
    elif isinstance(command, ct.To):
        role = state.roles.get(command.address)
        if role not in ("target", "witness", "accused"):
            raise Refused(f"{command.address} is not a target, witness or accused of this case")
        targets = [command.address]
    else:
        targets = state.with_role("accused")
        if not targets:
            raise Refused("no accused recorded: use #accused ADDRESS first")
    # Anonymity holds whichever command reaches the accused (#to as much as #notify-accused).
    reaches_accused = any(state.roles.get(target) == "accused" for target in targets)
    if reaches_accused and state.anonymous and _names_reporter(text, state.case):
        raise Refused("the case is anonymous and the text names the reporter")
    effects: list[Effect] = []
    written = {p.address: p.written for p in state.case.participants}
    params = {"text": text, "case": str(c.case), "case_tag": c.snapshot.team.case_tag}
    for target in targets:
        effects.append(
            SendMail(
                case=c.case,
                recipient=target,
                written=written.get(target, target),
                kind="reply",
                template="outgoing",
                params=params,
                caused_by=c.sender,
            )
        )
    if isinstance(command, ct.NotifyAccused):
        state.notified = True
        effects.append(UpdateCase(c.case, {"accused_notified_at": c.now}))
    # The result quotes the mail as rendered, signature and all: exactly what went out.
    sent = templates.render("outgoing", params)
    return effects, f"sent to {', '.join(targets)}:\n\n{_quoted(sent)}"


def _names_reporter(text: str, case: CaseView) -> bool:
    """Whether the text gives the reporter away. Addresses are found and normalised as
    recusal finds them: staff copies show the address as written (`rita+cgw@`, an IDN
    domain), and that is what staff paste; the written form is looked for as well."""
    folded = text.casefold()
    found = addresses_in(text)
    for person in case.with_role("reporter"):
        if person.address and person.address in found:
            return True
        if person.written and person.written.casefold() in folded:
            return True
        if person.name and len(person.name) > 2 and person.name.casefold() in folded:
            return True
    return False


def _quoted(text: str) -> str:
    return "\n".join(f"| {line}" for line in text.rstrip().splitlines())


def _escalate(c: Context) -> tuple[list[Effect], str]:
    director = c.snapshot.team.director
    if c.state.case.recused(director.address):
        raise Refused("the executive director is recused from this case")
    c.state.escalated = True
    case = c.state.case
    people = "\n".join(
        f"  {role:<9} {address}"
        for address, role in sorted(c.state.roles.items(), key=lambda item: item[1])
    )
    last = max((item.at for item in c.snapshot.history), default=case.created_at)
    history = "\n\n".join(
        f"--- {item.kind} from {item.sender or '(unknown)'} at "
        f"{item.at.isoformat(timespec='minutes')} ---\n{item.text.strip()}"
        for item in c.snapshot.history
        if item.kind in ("report", "note", "correspondence")
    )
    summary = SendMail(
        case=c.case,
        recipient=director.address,
        written=director.address,
        kind="notification",
        template="escalation",
        params={
            "status": c.state.status,
            "opened": case.created_at.isoformat(timespec="minutes"),
            "last_message": last.isoformat(timespec="minutes"),
            "escalated": c.now.isoformat(timespec="minutes"),
            "urgent": "yes" if case.urgent else "no",
            "participants": people,
            "history": history or "(nothing filed)",
            "by": c.sender,
        },
        subject=f"Escalated: {case.subject or '(no subject)'}",
        caused_by=c.sender,
    )
    return [
        AddParticipant(c.case, director.address, director.address, director.name, "director"),
        UpdateCase(c.case, {"escalated_at": c.now}),
        summary,
    ], "escalated: the executive director has the case"


def run(
    message: ParsedMessage,
    snapshot: Snapshot,
    case: CaseView,
    rule: str,
    parsed: ParsedCommands,
    now: datetime,
) -> Outcome:
    """Plan every command first; any refusal leaves the case exactly as it was."""
    assert snapshot.policy is not None
    sender = message.from_address or ""
    state = Working.of(case, snapshot.ban_ends)
    context = Context(snapshot, snapshot.policy, sender, now, state, Origin(0, ""))
    effects: list[Effect] = []
    results: list[str] = []
    for number, (command, line) in enumerate(
        zip(parsed.commands, parsed.lines, strict=True), start=1
    ):
        context.origin = Origin(number, line)
        try:
            if isinstance(command, OUTGOING):
                planned, done = _outgoing(context, command, parsed.text, message)
            elif isinstance(command, ct.Escalate):
                planned, done = _escalate(context)
            else:
                planned, done = PLANNERS[type(command)](context, command)
        except Refused as refusal:
            return refused(message, case, rule, CommandError(number, line, str(refusal)))
        effects += planned
        results.append(f"{line}\n  -> {done}")
    return _applied(message, snapshot, case, rule, parsed, effects, results, now)


def _applied(
    message: ParsedMessage,
    snapshot: Snapshot,
    case: CaseView,
    rule: str,
    parsed: ParsedCommands,
    effects: list[Effect],
    results: list[str],
    now: datetime,
) -> Outcome:
    sender = message.from_address or ""
    report = "\n\n".join(results)
    heading: list[Effect] = [
        RecordIncoming(case.number, "command", rule, sender),
        UpdateCase(case.number, {"first_staff_mail_at": now, "last_activity_at": now}),
        Audit(case.number, "commands-applied", sender, {"lines": list(parsed.lines)}),
    ]
    note = report if parsed.outgoing is not None else f"{report}\n\n{parsed.text}".rstrip()
    copies: list[Effect] = [
        SendMail(
            case=case.number,
            recipient=p.address,
            written=p.address,
            kind="note",
            template="staff-note",
            params={"author": message.from_written or sender, "text": note},
            subject=message.subject or case.subject or "(no subject)",
            caused_by=sender,
        )
        for p in staff_audience(case, snapshot, exclude=sender)
    ]
    return Outcome(
        "command",
        rule,
        (*heading, *effects, *copies, _result_mail(message, case, sender, report)),
        case=case.number,
    )


def refused(message: ParsedMessage, case: CaseView, rule: str, error: CommandError) -> Outcome:
    """A command line that cannot apply: nothing changes, and the sender is told which line."""
    sender = message.from_address or ""
    text = (
        f"Nothing was changed: line {error.line} cannot apply.\n\n{error.text}\n  -> {error.reason}"
    )
    return Outcome(
        "command",
        rule,
        (
            RecordIncoming(case.number, "command", rule, sender),
            Audit(
                case.number,
                "commands-refused",
                sender,
                {"line": error.line, "text": error.text, "reason": error.reason},
            ),
            _result_mail(message, case, sender, text),
        ),
        case=case.number,
    )
