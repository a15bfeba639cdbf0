"""Reads what a handler may know about one message: the team, its cases, threading facts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.secret import Secrets
from handlers.dispatch import Addressing
from handlers.message import ParsedMessage
from handlers.snapshot import Person, Signed, Snapshot, Team
from rules import routing, threading, tokens
from rules.addresses import normalise
from storage import cases, outbox


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
) -> Signed | None:
    """Whose token this is, trying every participant of the case (constant-time compares)."""
    if not isinstance(detail, tokens.Signed):
        return None
    view = cases.views(session, [detail.number]).get(detail.number)
    if view is None:
        return None
    for participant in view.participants:
        if tokens.verify_token(secrets.all, detail.number, participant.address, detail.token):
            return Signed(detail.number, participant.address)
    return None


def build(
    session: Session,
    settings: Settings,
    secrets: Secrets,
    parsed: ParsedMessage,
    where: Addressing,
    now: datetime,
) -> Snapshot:
    team = team_from(settings)
    signed = _signed(session, where.detail, secrets)
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
    sender = parsed.loop.envelope_sender
    automatic = {}
    if sender:
        automatic[sender.lower()] = outbox.automatic_sent_since(
            session, sender, now - timedelta(hours=1)
        )
    return Snapshot(
        team=team, threading=facts, cases=views, signed=signed, automatic_replies=automatic
    )
