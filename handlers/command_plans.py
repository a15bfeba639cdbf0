"""What each staff command does to a case: checked against its state, returned as effects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers.effects import (
    AddBan,
    AddParticipant,
    AddSanction,
    AddTimer,
    DecideHeld,
    Effect,
    ExtendRetention,
    LiftBan,
    MergeCase,
    Origin,
    SetRecused,
    UpdateCase,
)
from handlers.snapshot import CaseView, Policy, Snapshot
from rules import command_types as ct
from rules import retention
from rules.bans import BadPattern, parse_pattern, protected_hits
from rules.errors import GatewayError
from rules.refusals import format_until

PROCEDURE = "refused until the case has had #escalate and #notify-accused"


class Refused(GatewayError):
    """A command that cannot apply; the whole message then changes nothing."""


@dataclass
class Working:
    """The case as the commands of one message leave it, command by command."""

    case: CaseView
    status: str
    anonymous: bool
    escalated: bool
    notified: bool
    roles: dict[str, str]
    ban_ends: list[datetime | None] = field(default_factory=list)

    @classmethod
    def of(cls, case: CaseView, ban_ends: tuple[datetime | None, ...]) -> Working:
        return cls(
            case,
            case.status,
            case.anonymous,
            case.escalated,
            case.accused_notified,
            {p.address: p.role for p in case.participants},
            list(ban_ends),
        )

    def with_role(self, *roles: str) -> list[str]:
        return [address for address, role in self.roles.items() if role in roles]


@dataclass
class Context:
    """One message's commands: who sent them, when, and the line being planned."""

    snapshot: Snapshot
    policy: Policy
    sender: str
    now: datetime
    state: Working
    origin: Origin

    @property
    def case(self) -> int:
        return self.state.case.number


Plan = tuple[list[Effect], str]


def _status(c: Context, command: ct.Status) -> Plan:
    changes: dict[str, object] = {"status": command.status.value}
    done = f"status {c.state.status} -> {command.status.value}"
    if c.state.status == "closed":
        changes.update(closed_at=None, expunge_at=None)
        done += " (reopened; its expunge date is cleared)"
    c.state.status = command.status.value
    return [UpdateCase(c.case, changes)], done


def _assign(c: Context, command: ct.Assign) -> Plan:
    team = c.snapshot.team
    if not team.is_team(command.address):
        raise Refused(f"{command.address} is not a staff member")
    if c.state.case.recused(command.address):
        # Recused, or a party to the case: they may not see it, so they cannot handle it.
        raise Refused(f"{command.address} is kept out of this case (recused or a party to it)")
    return [UpdateCase(c.case, {"assignee": command.address})], f"assigned to {command.address}"


def _urgent(c: Context, command: ct.Urgent) -> Plan:
    effects: list[Effect] = [UpdateCase(c.case, {"urgent": command.on})]
    director = c.snapshot.team.director
    if command.on and not c.state.case.recused(director.address):
        effects.append(
            AddParticipant(c.case, director.address, director.address, director.name, "director")
        )
    return effects, "marked urgent" if command.on else "no longer urgent"


def _anonymous(c: Context, command: ct.Anonymous) -> Plan:
    c.state.anonymous = command.on
    done = (
        "anonymous to the accused"
        if command.on
        else "the reporter agreed to be named to the accused"
    )
    return [UpdateCase(c.case, {"anonymous": command.on})], done


def _add_person(c: Context, address: str, written: str, role: str) -> Plan:
    team = c.snapshot.team
    if team.is_team(address) or address == team.conduct_address:
        raise Refused(f"{address} is staff or the gateway itself")
    current = c.state.roles.get(address)
    if current is not None and current != role:
        raise Refused(f"{address} is already the {current} of this case")
    c.state.roles[address] = role
    return [AddParticipant(c.case, address, written, "", role)], f"{role}: {address}"


def _accused(c: Context, command: ct.Accused) -> Plan:
    return _add_person(c, command.address, command.written, "accused")


def _participant(c: Context, command: ct.Participant) -> Plan:
    return _add_person(c, command.address, command.written, command.role.value)


def _ban(c: Context, command: ct.Ban) -> Plan:
    try:
        pattern = parse_pattern(command.pattern)
    except BadPattern as error:
        raise Refused(error.reason) from None
    team = c.snapshot.team
    protected = [p.address for p in team.staff] + [team.director.address, team.conduct_address]
    hits = protected_hits(pattern, protected, c.policy.local_domains)
    if hits:
        raise Refused("; ".join(hits))
    list_address = command.list_address if command.scope is ct.BanScope.LIST else None
    if list_address is not None and not c.policy.serves(list_address):
        raise Refused(f"{list_address} is not a list this gateway serves")
    interim = not c.state.notified
    c.state.ban_ends.append(command.until)
    effects: list[Effect] = [
        AddBan(
            c.case,
            str(pattern),
            list_address,
            command.until,
            command.reason,
            c.sender,
            interim,
            c.origin,
        )
    ]
    if command.until is not None:
        effects.append(AddTimer(c.case, "ban-end", command.until))
    scope = list_address or "all lists"
    done = f"ban on {pattern} for {scope}"
    if command.until is not None:
        done += f" until {format_until(command.until, c.policy.zone)}"
    if interim:
        done += " (interim: recorded before #notify-accused)"
    return effects, done


def _unban(c: Context, command: ct.Unban) -> Plan:
    ban_id = int(command.ban_id) if command.ban_id and command.ban_id.isdigit() else None
    if command.ban_id is not None and ban_id is None:
        raise Refused(f"{command.ban_id!r} is neither a ban id nor a pattern")
    pattern = None
    if command.pattern is not None:
        try:
            pattern = str(parse_pattern(command.pattern))
        except BadPattern as error:
            raise Refused(error.reason) from None
    list_address = command.list_address if command.scope is ct.BanScope.LIST else None
    return [
        LiftBan(ban_id, pattern, list_address, c.sender, None, c.origin, c.policy.retention)
    ], f"ban {command.ban_id or pattern} lifted"


def _sanction(c: Context, command: ct.Sanction) -> Plan:
    if command.kind is not ct.SanctionKind.NO_CONTACT and not (
        c.state.escalated and c.state.notified
    ):
        raise Refused(PROCEDURE)
    effects: list[Effect] = [
        AddSanction(c.case, command.kind.value, command.until, command.note, c.sender)
    ]
    done = f"sanction {command.kind.value}"
    if command.until is not None:
        effects.append(AddTimer(c.case, "sanction-end", command.until, note=command.kind.value))
        done += f" until {format_until(command.until, c.policy.zone)}"
    return effects, done


def _remind(c: Context, command: ct.Remind) -> Plan:
    return [
        AddTimer(c.case, "remind", command.at, c.sender, command.note)
    ], f"reminder at {format_until(command.at, c.policy.zone)}"


def _recuse(c: Context, _command: ct.Recuse) -> Plan:
    return [
        SetRecused(c.case, c.sender)
    ], "you are recused: no further mail about this case reaches you"


def _held(c: Context, held_id: str, release: bool) -> Plan:
    verb = "released" if release else "discarded"
    return [DecideHeld(held_id, release, c.sender, None, c.origin)], f"held post {held_id} {verb}"


def _release(c: Context, command: ct.Release) -> Plan:
    return _held(c, command.held_id, True)


def _discard(c: Context, command: ct.Discard) -> Plan:
    return _held(c, command.held_id, False)


def _merge(c: Context, command: ct.Merge) -> Plan:
    if command.case == c.case:
        raise Refused("a case cannot be merged into itself")
    # Whether the sender may see the other case is the database's to say, when it merges.
    director = c.snapshot.team.is_director(c.sender)
    merge = MergeCase(command.case, c.case, c.origin, c.sender, by_director=director)
    return [merge], f"case #{command.case} merged into this one"


def _moderate_only(_c: Context, command: ct.Command) -> Plan:
    raise Refused(f"#{command.name.value} is only for mail to the moderation address")


def _close(c: Context, command: ct.Close) -> Plan:
    outcome = command.outcome.value
    if outcome in ("flagged", "banned") and not (c.state.escalated and c.state.notified):
        raise Refused(PROCEDURE)
    expunge = retention.expunge_at(outcome, c.now, c.policy.retention, c.state.ban_ends)
    c.state.status = "closed"
    effects: list[Effect] = [
        UpdateCase(
            c.case,
            {
                "status": "closed",
                "outcome": outcome,
                "outcome_note": command.note or None,
                "closed_at": c.now,
                "expunge_at": expunge,
            },
        )
    ]
    accused = tuple(c.state.with_role("accused"))
    if outcome in retention.EXTENDING_OUTCOMES and accused:
        # An open-ended date (a ban without end) keeps the earlier cases open-ended too:
        # a finite floor would let them go before this one (they get a date once it ends).
        effects.append(ExtendRetention(c.case, accused, expunge))
    when = format_until(expunge, c.policy.zone) if expunge else "while a ban lasts"
    return effects, f"closed as {outcome}; personal data kept until {when}"


# Each planner takes its own command class; the table is keyed by that class.
PLANNERS: dict[type, Callable[[Context, Any], Plan]] = {
    ct.Status: _status,
    ct.Assign: _assign,
    ct.Urgent: _urgent,
    ct.Anonymous: _anonymous,
    ct.Accused: _accused,
    ct.Participant: _participant,
    ct.Ban: _ban,
    ct.Unban: _unban,
    ct.Sanction: _sanction,
    ct.Remind: _remind,
    ct.Recuse: _recuse,
    ct.Release: _release,
    ct.Discard: _discard,
    ct.Merge: _merge,
    ct.OnBehalf: _moderate_only,
    ct.Ack: _moderate_only,
    ct.Close: _close,
}
