"""Reads what a handler may know about one message: the team, its cases, threading facts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import parsing
from gateway.config import Settings
from gateway.secret import Secrets
from handlers.dispatch import Addressing, has_command_lines
from handlers.message import ParsedMessage
from handlers.snapshot import (
    BouncedMail,
    HistoryItem,
    PendingConfirmation,
    Person,
    Policy,
    Signed,
    Snapshot,
    Team,
)
from rules import loops, routing, threading, tokens
from rules.addresses import normalise
from rules.commands import ParsedCommands, parse_commands
from rules.retention import Retention
from storage import bans, cases, confirmations, inbox, outbox
from storage.models import Case


def team_from(settings: Settings) -> Team:
    g = settings.gateway
    return Team(
        conduct_address=g.conduct_address.lower(),
        case_tag=g.case_tag,
        staff=tuple(Person(p.name, normalise(p.address)) for p in g.staff),
        director=Person(g.executive_director.name, normalise(g.executive_director.address)),
        postmaster=g.postmaster,
    )


def routing_table(settings: Settings) -> routing.RoutingTable:
    return routing.RoutingTable.build(
        conduct_address=settings.gateway.conduct_address,
        local_domains=settings.gateway.local_domains,
        lists=settings.relay.lists,
        list_domains=settings.relay.list_domains,
        postmaster=settings.gateway.postmaster,
    )


def addressing(
    settings: Settings,
    recipients: Iterable[str],
    received: datetime,
) -> Addressing:
    """The most specific conduct recipient decides; postmaster only when nothing else."""
    table = routing_table(settings)
    routes = [routing.route(table, r) for r in recipients]
    conduct = [r for r in routes if r.kind is routing.RouteKind.CONDUCT]
    details = tuple(r.detail for r in conduct)
    best = routing.most_specific(conduct)
    postmaster_domain = None
    if not conduct:
        postmasters = [r for r in routes if r.kind is routing.RouteKind.POSTMASTER]
        if postmasters:
            postmaster_domain = postmasters[0].recipient.rpartition("@")[2] or "localhost"
    return Addressing(
        detail=best.detail if best is not None else None,
        case_numbers=tuple(d.number for d in details if isinstance(d, tokens.Case)),
        postmaster_domain=postmaster_domain,
        received=received,
    )


def _signed(
    session: Session,
    detail: tokens.Detail | None,
    secrets: Secrets,
    team: Team,
) -> Signed | None:
    """Whose token this is, trying every participant of the case, then the configured staff
    and director (constant-time compares): staff configured after the case opened get
    copies with their own signed Reply-To before they are its participants."""
    if not isinstance(detail, tokens.Signed):
        return None
    # A merged case's people moved to the case it was merged into: their tokens reach it.
    target = merge_target(session, detail.number)
    view = cases.views(session, [target]).get(target)
    if view is None:
        return None
    candidates = [p.address for p in view.participants]
    candidates += [p.address for p in (*team.staff, team.director)]
    for address in dict.fromkeys(candidates):
        if tokens.verify_token(secrets.all, detail.number, address, detail.token):
            return Signed(target, address)
    return None


def merge_target(session: Session, number: int) -> int:
    """The case that `number` was merged into, following merges of merges; else `number`."""
    for _hop in range(100):
        into = session.execute(select(Case.merged_into).where(Case.number == number)).scalar()
        if into is None:
            return number
        number = into
    return number


def follow_merges(session: Session, where: Addressing) -> Addressing:
    """`conduct+N@` of a merged case names the case it was merged into."""
    if not where.case_numbers:
        return where
    numbers = tuple(dict.fromkeys(merge_target(session, n) for n in where.case_numbers))
    return replace(where, case_numbers=numbers)


def _bounced(
    session: Session, detail: tokens.Detail | None, parsed: ParsedMessage
) -> BouncedMail | None:
    """The outbox entry a bounce answers: by a known bounce ID, else by a DSN's Message-IDs
    (an unknown bounce ID alone finds nothing: that mail is handled as conduct mail)."""
    if isinstance(detail, tokens.Bounce):
        found = outbox.bounced(session, detail.bounce_id, ())
        if found is not None:
            return found
    if loops.is_bounce(parsed.loop, to_bounce_address=False):
        return outbox.bounced(session, None, parsed.reported_message_ids)
    return None


def build(
    session: Session,
    settings: Settings,
    secrets: Secrets,
    parsed: ParsedMessage,
    where: Addressing,
    now: datetime,
    raw: bytes = b"",
) -> Snapshot:
    team = team_from(settings)
    signed = _signed(session, where.detail, secrets, team)
    references = parsed.references
    generated = cases.ids_by_direction(session, references, "out")
    received = cases.ids_by_direction(session, references, "in")
    tag = threading.subject_tag(parsed.subject, team.case_tag)
    candidates = {*generated.values(), *received.values(), *where.case_numbers}
    if tag is not None:
        candidates.add(tag)
    if signed is not None:
        candidates.add(signed.case)
    views = cases.views(session, candidates)
    facts = threading.ThreadFacts(
        generated_ids=generated,
        received_ids=received,
        participants={n: frozenset(p.address for p in v.participants) for n, v in views.items()},
        existing_cases=frozenset(views),
    )
    bounced = _bounced(session, where.detail, parsed)
    if bounced is not None and bounced.case is not None and bounced.case not in views:
        # Who may hear of a bounce depends on its case's recusals; threading never sees it.
        views = {**views, **cases.views(session, [bounced.case])}
    sender = parsed.loop.envelope_sender
    automatic = {}
    if sender:
        automatic[sender.lower()] = outbox.automatic_sent_since(
            session, sender, now - timedelta(hours=1)
        )
    snapshot = Snapshot(
        team=team,
        threading=facts,
        cases=views,
        signed=signed,
        automatic_replies=automatic,
        policy=policy_from(settings),
        bounced=bounced,
    )
    if isinstance(where.detail, (tokens.Moderate, tokens.Confirm)):
        return _with_moderation_facts(session, snapshot, settings, parsed, raw, where, now)
    return _with_command_facts(session, snapshot, settings, parsed, raw, now)


def _dkim(settings: Settings, sender: str | None, raw: bytes) -> bool:
    """Only computed where a command needs it: it may ask the DNS."""
    if not settings.require_dkim or sender is None:
        return False
    from gateway.dkim_check import verify_aligned

    return verify_aligned(raw, sender.rpartition("@")[2]).passed


def _with_moderation_facts(
    session: Session,
    snapshot: Snapshot,
    settings: Settings,
    parsed: ParsedMessage,
    raw: bytes,
    where: Addressing,
    now: datetime,
) -> Snapshot:
    pending = None
    if isinstance(where.detail, tokens.Confirm):
        found = confirmations.find(session, where.detail.token, now)
        if found is not None:
            pending = PendingConfirmation(found.id, found.sender, found.commands)
            snapshot = _with_request(session, snapshot, settings, pending, found.inbox_id, now)
            pending = snapshot.confirmation
    return replace(
        snapshot, confirmation=pending, dkim_passed=_dkim(settings, parsed.from_address, raw)
    )


def _with_request(
    session: Session,
    snapshot: Snapshot,
    settings: Settings,
    pending: PendingConfirmation,
    inbox_id: int | None,
    now: datetime,
) -> Snapshot:
    """The request a confirmation answers, and, for `#on-behalf`, how many automatic replies
    its reporter got this hour (the acknowledgement counts against theirs, not staff's)."""
    entry = inbox.get(session, inbox_id) if inbox_id is not None else None
    if entry is None or not entry.raw:
        return replace(snapshot, confirmation=pending)
    request = parsing.parse(entry.raw, entry.envelope_sender)
    pending = replace(pending, request=request, request_inbox_id=entry.id)
    parsed = parse_commands(
        pending.commands, sender=pending.sender, tz=settings.reminders.timezone, now=now
    )
    automatic = dict(snapshot.automatic_replies)
    if isinstance(parsed, ParsedCommands) and parsed.on_behalf is not None:
        written = parsed.on_behalf.written
        automatic[written.lower()] = outbox.automatic_sent_since(
            session, written, now - timedelta(hours=1)
        )
    return replace(snapshot, confirmation=pending, automatic_replies=automatic)


def policy_from(settings: Settings) -> Policy:
    r = settings.retention
    return Policy(
        zone=settings.reminders.timezone,
        lists=settings.relay.lists,
        list_domains=settings.relay.list_domains,
        moderators={k: tuple(normalise(a) for a in v) for k, v in settings.moderators.items()},
        local_domains=settings.gateway.local_domains,
        require_dkim=settings.require_dkim,
        retention=Retention(r.no_violation, r.resolved, r.flagged, r.banned_extra),
    )


def _with_command_facts(
    session: Session,
    snapshot: Snapshot,
    settings: Settings,
    parsed: ParsedMessage,
    raw: bytes,
    now: datetime,
) -> Snapshot:
    """DKIM, the case's history and its bans: read only for staff mail with command lines."""
    team = snapshot.team
    sender = parsed.from_address
    if snapshot.signed is None or not team.is_team(sender):
        return snapshot
    if not has_command_lines(parsed.text):
        return snapshot
    dkim_passed = _dkim(settings, sender, raw)
    case = snapshot.signed.case
    history = tuple(
        HistoryItem(kind, who, at, text or "")
        for kind, who, at, text in cases.history(session, case)
    )
    ends = tuple(
        record.ban.expires_at for record in bans.for_case(session, case) if record.active(now)
    )
    return replace(snapshot, dkim_passed=dkim_passed, history=history, ban_ends=ends)
