"""Idle list-server connections carry the next post; a stale one never costs a post."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from gateway.config_values import HostPort
from gateway.relay import RelayResult, relay
from gateway.upstream_pool import UpstreamPool
from tests.gateway.test_relay import LIST, POST, TIMEOUT, Upstream, hang_up, running


class CountingUpstream(Upstream):
    """Records the client port of each MAIL, so a test sees which connection carried it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ports: list[int] = []
        self.servers: list[SMTPServer] = []

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.ports.append(int(session.peer[1]))
        self.servers.append(server)
        return await super().handle_MAIL(server, session, envelope, address, options)


async def post(
    upstream: HostPort, protocol: Literal["smtp", "lmtp"], pool: UpstreamPool, number: int
) -> RelayResult:
    return await relay(
        upstream,
        protocol,
        mail_from="poster@example.net",
        recipients=[LIST],
        data=POST.replace(b"post-1@", f"post-{number}@".encode()),
        eight_bit=True,
        smtputf8=False,
        helo_name="gateway.example.org",
        timeout=TIMEOUT,
        pool=pool,
    )


@pytest.fixture(params=["smtp", "lmtp"])
def protocol(request: pytest.FixtureRequest) -> Literal["smtp", "lmtp"]:
    value: Literal["smtp", "lmtp"] = request.param
    return value


def test_the_next_post_goes_over_the_same_connection(protocol: Literal["smtp", "lmtp"]) -> None:
    handler = CountingUpstream()

    async def scenario(upstream: HostPort) -> None:
        pool = UpstreamPool()
        for number in range(3):
            assert (await post(upstream, protocol, pool, number)).any_accepted
        await pool.close()
        assert pool.reused == 2

    with running(handler, lmtp=protocol == "lmtp") as upstream:
        asyncio.run(scenario(upstream))
    assert len(handler.envelopes) == 3
    assert len(set(handler.ports)) == 1


def test_a_connection_the_upstream_closed_while_idle_costs_no_post(
    protocol: Literal["smtp", "lmtp"],
) -> None:
    handler = CountingUpstream()

    async def scenario(upstream: HostPort) -> None:
        pool = UpstreamPool()
        assert (await post(upstream, protocol, pool, 1)).any_accepted
        hang_up(handler.servers[-1])  # the list server's own idle timeout, say
        await asyncio.sleep(0.2)
        result = await post(upstream, protocol, pool, 2)
        assert result.any_accepted, result.client_reply()
        await pool.close()

    with running(handler, lmtp=protocol == "lmtp") as upstream:
        asyncio.run(scenario(upstream))
    ids = [b"post-1@" in e.original_content for e in handler.envelopes]
    assert ids == [True, False]  # each post once, the second on a fresh connection
    assert len(set(handler.ports)) == 2


def test_an_idle_connection_is_closed_after_the_idle_time() -> None:
    handler = CountingUpstream()
    now = [0.0]

    async def scenario(upstream: HostPort) -> None:
        pool = UpstreamPool(idle=10.0, clock=lambda: now[0])
        await post(upstream, "smtp", pool, 1)
        now[0] = 10.0
        pool.sweep()
        await post(upstream, "smtp", pool, 2)
        await pool.close()
        assert pool.reused == 0

    with running(handler) as upstream:
        asyncio.run(scenario(upstream))
    assert len(set(handler.ports)) == 2


def test_a_reload_to_another_upstream_never_reuses_the_old_one() -> None:
    first, second = CountingUpstream(), CountingUpstream()

    async def scenario(one: HostPort, two: HostPort) -> None:
        pool = UpstreamPool()
        await post(one, "smtp", pool, 1)
        await post(two, "smtp", pool, 2)
        await pool.close()
        assert pool.reused == 0

    with running(first) as one, running(second) as two:
        asyncio.run(scenario(one, two))
    assert len(first.envelopes) == len(second.envelopes) == 1


def test_a_service_closing_reply_is_never_kept_for_reuse() -> None:
    handler = CountingUpstream(data="421 4.3.2 Shutting down")

    async def scenario(upstream: HostPort) -> None:
        pool = UpstreamPool()
        with pytest.raises(Exception, match="421"):
            await post(upstream, "smtp", pool, 1)
        handler.data = "250 2.0.0 Ok"
        assert (await post(upstream, "smtp", pool, 2)).any_accepted
        await pool.close()
        assert pool.reused == 0

    with running(handler) as upstream:
        asyncio.run(scenario(upstream))


def test_a_pooled_connection_the_upstream_said_421_on_is_replaced(
    protocol: Literal["smtp", "lmtp"],
) -> None:
    """Servers often say `421 idle timeout` before closing a quiet connection; the
    gateway reads it at its next MAIL and sends the post on a fresh connection."""
    handler = CountingUpstream()

    def say_goodbye(server: SMTPServer) -> None:
        transport = server.transport
        assert transport is not None
        transport.write(b"421 4.4.2 Idle timeout, closing\r\n")
        transport.close()

    async def scenario(upstream: HostPort) -> None:
        pool = UpstreamPool()
        assert (await post(upstream, protocol, pool, 1)).any_accepted
        server = handler.servers[-1]
        server.loop.call_soon_threadsafe(say_goodbye, server)
        await asyncio.sleep(0.2)
        result = await post(upstream, protocol, pool, 2)
        assert result.any_accepted, result.client_reply()
        await pool.close()

    with running(handler, lmtp=protocol == "lmtp") as upstream:
        asyncio.run(scenario(upstream))
    assert len(handler.envelopes) == 2
    assert len(set(handler.ports)) == 2


def test_shutdown_never_waits_long_for_a_list_server_that_ignores_quit() -> None:
    """Closing the pool says QUIT; a server that never answers is cut off, not waited on."""

    class Silent:
        closed = False

        @property
        def usable(self) -> bool:
            return True

        async def close(self) -> None:
            try:
                await asyncio.sleep(3600)  # QUIT sent, no answer ever comes
            finally:
                self.closed = True

    async def scenario() -> Silent:
        pool = UpstreamPool()
        session = Silent()
        pool.give("key", session)
        await asyncio.wait_for(pool.close(), 60)  # bounded by GOODBYE_SECONDS, not 3600
        return session

    assert asyncio.run(scenario()).closed
