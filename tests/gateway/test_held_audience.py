"""Who hears of a held post (SPEC section 6), and when the daily run discards it (`hold_days`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.scheduler import Scheduler
from rules.bans import parse_pattern
from storage import bans, cases, held
from storage.models import HeldPost
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.list_relay_setup import ListGateway, post, settle

DEV = "dev@lists.example.org"
STAFF = {"alice@example.org": "Alice Example", "bob@example.org": ""}


@pytest.fixture
def relay(tmp_path: Path, database_url: str) -> Iterator[ListGateway]:
    gateway = ListGateway(tmp_path, database_url, ban_action="hold")
    yield gateway
    gateway.close()


def open_case(gateway: ListGateway, *, recused: set[str], director_only: bool = False) -> int:
    now = datetime.now(UTC)
    with gateway.database.transaction() as session:
        number = cases.open_case(
            session, now=now, subject="About mallory", urgent=False, director_only=director_only
        )
        for address, name in STAFF.items():
            cases.add_participant(
                session,
                case=number,
                address=address,
                written=address,
                name=name,
                role="staff",
                recused=address in recused or director_only,
                now=now,
            )
        if director_only:
            cases.add_participant(
                session,
                case=number,
                address="ed@example.org",
                written="ed@example.org",
                name="Erin Director",
                role="director",
                recused=False,
                now=now,
            )
    return number


def case_ban(gateway: ListGateway, pattern: str, case: int) -> None:
    with gateway.database.transaction() as session:
        bans.add(
            session,
            pattern=parse_pattern(pattern),
            list_address=None,
            reason="private reason",
            created_by="bob@example.org",
            now=datetime.now(UTC),
            case=case,
        )
    gateway.thread.run(gateway.bans.refresh_now())


def notified(gateway: ListGateway) -> list[str]:
    return sorted(r for m in gateway.smarthost.messages for r in m.rcpt_tos)


def test_a_post_held_by_a_case_ban_is_never_told_to_staff_recused_on_that_case(
    relay: ListGateway,
) -> None:
    number = open_case(relay, recused={"alice@example.org"})
    case_ban(relay, "mallory@example.com", number)
    assert relay.send("mallory@example.com", [DEV], post(sender="mallory@example.com")) == {}
    [row] = relay.held_posts()
    assert row.case_number == number
    [notice] = relay.notices_to("bob@example.org")
    assert f"Subject: Held post {row.id} to {DEV}".encode() in notice.data
    relay.notices_to("carol@example.org")  # the list's moderator
    settle()
    assert notified(relay) == ["bob@example.org", "carol@example.org"]


def test_a_post_held_by_a_director_only_case_s_ban_is_told_to_the_director_alone(
    relay: ListGateway,
) -> None:
    number = open_case(relay, recused=set(), director_only=True)
    case_ban(relay, "mallory@example.com", number)
    assert relay.send("mallory@example.com", [DEV], post(sender="mallory@example.com")) == {}
    relay.notices_to("ed@example.org")
    relay.notices_to("carol@example.org")
    settle()
    assert notified(relay) == ["carol@example.org", "ed@example.org"]


def test_a_ban_without_a_case_tells_only_the_list_s_moderators(relay: ListGateway) -> None:
    relay.ban("mallory@example.com")
    assert relay.send("mallory@example.com", [DEV], post(sender="mallory@example.com")) == {}
    relay.notices_to("carol@example.org")
    settle()
    assert notified(relay) == ["carol@example.org"]


# The scheduler's daily run discards what was held longer than [relay] hold_days.


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    gateway.settings = replace(gateway.settings, relay=replace(gateway.settings.relay, hold_days=2))
    yield gateway
    gateway.database.dispose()


def hold_at(gw: Gateway, when: datetime, subject: str) -> int:
    with gw.database.transaction() as session:
        return held.hold(
            session,
            list_address=DEV,
            sender="mallory@example.com",
            subject=subject,
            reason="ban 1",
            ban_id=None,
            case=None,
            envelope_sender="mallory@example.com",
            envelope_recipients=[DEV],
            raw=post(),
            now=when,
            message_key=subject,
        )


def states(gw: Gateway) -> dict[int, str]:
    with gw.database.transaction() as session:
        rows = session.execute(select(HeldPost).order_by(HeldPost.id)).scalars()
        return {row.id: row.state for row in rows}


def test_the_daily_run_discards_posts_held_longer_than_hold_days(gw: Gateway) -> None:
    now = datetime.now(UTC)
    old = hold_at(gw, now - timedelta(days=2, hours=1), "old")
    young = hold_at(gw, now - timedelta(days=1, hours=23), "young")
    scheduler = Scheduler(lambda: gw.settings, gw.database, gw.secrets, lambda: now)

    async def scenario() -> dict[int, str]:
        await scheduler.start()  # leader at once: the daily run missed so far runs now
        try:
            for _ in range(100):
                found = states(gw)
                if found[old] != "held":
                    return found
                await asyncio.sleep(0.1)
            raise AssertionError("the daily run did not discard the old post")
        finally:
            await scheduler.stop()

    found = asyncio.run(scenario())
    assert found == {old: "expired", young: "held"}
