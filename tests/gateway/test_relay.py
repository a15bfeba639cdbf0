"""The relay against real aiosmtpd upstreams, SMTP and LMTP: bytes, parameters, replies, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from gateway.config_values import HostPort
from gateway.relay import RelayResult, UpstreamUnavailable, relay
from tests.components import free_port

LIST = "announce@lists.example.org"
OTHER = "dev@lists.example.org"
THIRD = "ops@lists.example.org"
FOURTH = "misc@lists.example.org"
TIMEOUT = 5.0

# A post as the gateway hands it on: trace field first, CRLF line ends, a DKIM signature
# whose body hash depends on every byte, 8-bit text, dot-lines, a long line.
POST = (
    b"Received: from mail.example.net ([192.0.2.10]) by gateway.example.org\r\n"
    b"\twith ESMTPS id 4QxYz12; Tue, 07 May 2030 09:30:00 +0000\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.net; s=sel;\r\n"
    b"\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
    b"\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgbG9va3MgbGlrZSBvbmU=\r\n"
    b"From: Poster <poster@example.net>\r\n"
    b"To: announce@lists.example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <post-1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b".starts with a dot\r\n"
    b"..starts with two dots\r\n"
    b".\r\n"
    b" .space then dot\r\n"
    b"Gr\xc3\xbc\xc3\x9fe, caf\xe9 latin-1 byte, \x80\xff raw\r\n"
    b"tab\there  trailing spaces   \r\n"
    b"\r\n" + b"x" * 990 + b"\r\n"
    b"\r\n"
    b".\r\n"
)


class Upstream:
    """An aiosmtpd handler that records what arrives and answers as each test tells it."""

    def __init__(
        self,
        *,
        rcpt: dict[str, str] | None = None,
        data: str | Sequence[str] = "250 2.0.0 Ok: queued",
        mail: str | None = None,
        delay: float = 0.0,
        drop_at: Literal["rcpt", "data", "after-first-reply"] | None = None,
    ) -> None:
        self.rcpt = rcpt or {}
        self.data = data
        self.mail = mail
        self.delay = delay
        self.drop_at = drop_at
        self.envelopes: list[Envelope] = []

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.mail:
            return self.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.drop_at == "rcpt":
            hang_up(server)
        if address in self.rcpt:
            return self.rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        await asyncio.sleep(self.delay)
        if self.drop_at == "data":
            hang_up(server)
        if isinstance(self.data, str):
            return self.data
        # An LMTP server answers once per accepted recipient, in RCPT order (RFC 2033).
        replies = list(self.data)
        assert len(replies) == len(envelope.rcpt_tos)
        if self.drop_at == "after-first-reply":
            await server.push(replies[0])
            hang_up(server)
        return "\r\n".join(replies)


def hang_up(server: SMTPServer) -> None:
    assert server.transport is not None
    server.transport.close()


class LMTPController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


@contextmanager
def running(handler: Upstream, *, lmtp: bool = False, **server: Any) -> Iterator[HostPort]:
    kind = LMTPController if lmtp else Controller
    controller = kind(handler, hostname="127.0.0.1", port=free_port(), **server)
    controller.start()
    try:
        yield HostPort("127.0.0.1", controller.port)
    finally:
        controller.stop()


def send(
    upstream: HostPort,
    protocol: Literal["smtp", "lmtp"] = "smtp",
    recipients: Sequence[str] = (LIST,),
    data: bytes = POST,
    *,
    eight_bit: bool = True,
    smtputf8: bool = False,
    mail_from: str = "poster@example.net",
    timeout: float = TIMEOUT,
) -> RelayResult:
    return asyncio.run(
        relay(
            upstream,
            protocol,
            mail_from=mail_from,
            recipients=recipients,
            data=data,
            eight_bit=eight_bit,
            smtputf8=smtputf8,
            helo_name="gateway.example.org",
            timeout=timeout,
        )
    )


@pytest.fixture(params=["smtp", "lmtp"])
def protocol(request: pytest.FixtureRequest) -> Literal["smtp", "lmtp"]:
    value: Literal["smtp", "lmtp"] = request.param
    return value


# Bytes


def test_the_upstream_receives_every_byte_as_sent(protocol: Literal["smtp", "lmtp"]) -> None:
    handler = Upstream(data=["250 2.1.5 Ok"] if protocol == "lmtp" else "250 2.0.0 Ok")
    with running(handler, lmtp=protocol == "lmtp") as upstream:
        result = send(upstream, protocol)
    assert result.accepted == (LIST,)
    assert handler.envelopes[0].original_content == POST
    assert handler.envelopes[0].mail_from == "poster@example.net"
    assert handler.envelopes[0].rcpt_tos == [LIST]


def test_a_bare_line_feed_cannot_end_the_data_early_at_the_upstream() -> None:
    """SMTP smuggling: `\\n.\\r\\n` becomes a dot line that is stuffed, not an end of data."""
    smuggled = b"Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@example.com>\r\nbye\r\n"
    handler = Upstream()
    with running(handler) as upstream:
        send(upstream, data=smuggled)
    assert len(handler.envelopes) == 1
    assert handler.envelopes[0].original_content == (
        b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@example.com>\r\nbye\r\n"
    )


# ESMTP parameters


def test_size_body_and_smtputf8_are_passed_on_when_advertised(
    protocol: Literal["smtp", "lmtp"],
) -> None:
    handler = Upstream(data=["250 Ok"] if protocol == "lmtp" else "250 Ok")
    with running(handler, lmtp=protocol == "lmtp") as upstream:
        send(upstream, protocol, mail_from="pöster@example.net", smtputf8=True)
    envelope = handler.envelopes[0]
    assert envelope.mail_options == [f"SIZE={len(POST)}", "BODY=8BITMIME", "SMTPUTF8"]
    assert envelope.mail_from == "pöster@example.net"
    assert envelope.smtp_utf8


def test_nothing_is_claimed_that_the_upstream_does_not_advertise() -> None:
    handler = Upstream()
    with running(handler, data_size_limit=None, decode_data=True) as upstream:
        send(upstream, data=b"Subject: plain\r\n\r\nascii\r\n", eight_bit=True)
    assert handler.envelopes[0].mail_options == []


def test_a_seven_bit_post_claims_no_8bitmime() -> None:
    handler = Upstream()
    plain = b"Subject: plain\r\n\r\nascii\r\n"
    with running(handler) as upstream:
        send(upstream, data=plain, eight_bit=False)
    assert handler.envelopes[0].mail_options == [f"SIZE={len(plain)}"]


def test_smtputf8_without_upstream_support_is_refused_and_nothing_is_sent(
    protocol: Literal["smtp", "lmtp"],
) -> None:
    handler = Upstream()
    with running(handler, lmtp=protocol == "lmtp", enable_SMTPUTF8=False) as upstream:
        result = send(upstream, protocol, recipients=[LIST, OTHER], smtputf8=True)
    assert handler.envelopes == []
    assert result.refused == (LIST, OTHER)
    assert result.client_reply().startswith("550 5.6.7 ")


# SMTP replies


def test_the_smtp_upstreams_data_reply_is_the_clients_reply_as_is() -> None:
    handler = Upstream(data="250 2.0.0 Ok: queued as 4QxYz12")
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert result.client_reply() == "250 2.0.0 Ok: queued as 4QxYz12"
    assert result.accepted == (LIST, OTHER)
    assert result.any_accepted


def test_a_multi_line_reply_keeps_its_lines() -> None:
    handler = Upstream(data="550-5.7.1 This list is moderated\r\n550 5.7.1 See the list rules")
    with running(handler) as upstream:
        result = send(upstream)
    assert result.client_reply() == (
        "550-5.7.1 This list is moderated\r\n550 5.7.1 See the list rules"
    )


def test_a_permanent_rcpt_refusal_is_kept_while_the_others_get_the_data_reply() -> None:
    handler = Upstream(rcpt={OTHER: "550 5.1.1 No such list"})
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert result.accepted == (LIST,)
    assert result.refused == (OTHER,)
    assert result.deferred == ()
    assert [(r.recipient, r.reply.code) for r in result.replies] == [(LIST, 250), (OTHER, 550)]
    assert result.client_reply() == "250 2.0.0 Ok: queued"
    assert handler.envelopes[0].rcpt_tos == [LIST]


def test_a_temporary_rcpt_refusal_is_a_deferred_recipient() -> None:
    handler = Upstream(rcpt={OTHER: "452 4.2.1 Mailbox busy"})
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert result.deferred == (OTHER,)
    assert result.client_reply().startswith("250 ")


def test_every_rcpt_refused_sends_no_data_and_the_first_refusal_is_the_reply() -> None:
    handler = Upstream(rcpt={LIST: "550 5.1.1 No such list", OTHER: "550 5.1.1 Nor this one"})
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert handler.envelopes == []
    assert result.all_permanent_failures
    assert result.client_reply() == "550 5.1.1 No such list"


def test_a_temporary_refusal_wins_over_a_permanent_one_when_none_accepted() -> None:
    handler = Upstream(rcpt={LIST: "550 5.1.1 No such list", OTHER: "451 4.3.0 Try later"})
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert not result.all_permanent_failures
    assert result.client_reply() == "451 4.3.0 Try later"


@pytest.mark.parametrize(
    ("reply", "deferred", "refused"),
    [
        ("554 5.7.1 Rejected by list policy", (), (LIST, OTHER)),
        ("451 4.3.0 Temporary failure", (LIST, OTHER), ()),
    ],
)
def test_the_smtp_data_reply_applies_to_every_accepted_recipient(
    reply: str, deferred: tuple[str, ...], refused: tuple[str, ...]
) -> None:
    handler = Upstream(data=reply)
    with running(handler) as upstream:
        result = send(upstream, recipients=[LIST, OTHER])
    assert result.client_reply() == reply
    assert result.deferred == deferred
    assert result.refused == refused
    assert {r.reply.code for r in result.replies} == {int(reply[:3])}


def test_a_refused_sender_is_everyones_reply(protocol: Literal["smtp", "lmtp"]) -> None:
    handler = Upstream(mail="553 5.7.1 Sender not allowed to post")
    with running(handler, lmtp=protocol == "lmtp") as upstream:
        result = send(upstream, protocol, recipients=[LIST, OTHER])
    assert result.refused == (LIST, OTHER)
    assert result.client_reply() == "553 5.7.1 Sender not allowed to post"


def test_the_null_sender_is_relayed_as_empty_reverse_path() -> None:
    handler = Upstream()
    with running(handler) as upstream:
        send(upstream, mail_from="")
    assert handler.envelopes[0].mail_from == "<>"


# LMTP replies


def test_lmtp_answers_per_recipient_and_one_acceptance_is_a_250() -> None:
    handler = Upstream(
        rcpt={FOURTH: "550 5.1.1 No such list"},
        data=["250 2.1.5 announce ok", "452 4.2.2 dev is over quota", "550 5.1.1 ops is gone"],
    )
    with running(handler, lmtp=True) as upstream:
        result = send(upstream, "lmtp", recipients=[LIST, FOURTH, OTHER, THIRD])
    assert [(r.recipient, r.reply.code) for r in result.replies] == [
        (LIST, 250),
        (FOURTH, 550),
        (OTHER, 452),
        (THIRD, 550),
    ]
    assert result.client_reply() == "250 2.1.5 announce ok"
    assert result.accepted == (LIST,)
    assert result.deferred == (OTHER,)
    assert result.refused == (FOURTH, THIRD)
    assert handler.envelopes[0].original_content == POST


def test_lmtp_with_every_recipient_refused_answers_the_first_refusal() -> None:
    handler = Upstream(data=["550 5.1.1 announce is gone", "554 5.7.1 dev refuses"])
    with running(handler, lmtp=True) as upstream:
        result = send(upstream, "lmtp", recipients=[LIST, OTHER])
    assert not result.any_accepted
    assert result.all_permanent_failures
    assert result.client_reply() == "550 5.1.1 announce is gone"


def test_lmtp_with_no_acceptance_prefers_a_deferral_so_the_sender_retries() -> None:
    handler = Upstream(data=["550 5.1.1 announce is gone", "452 4.2.2 dev is over quota"])
    with running(handler, lmtp=True) as upstream:
        result = send(upstream, "lmtp", recipients=[LIST, OTHER])
    assert result.client_reply() == "452 4.2.2 dev is over quota"


def test_lmtp_connection_lost_after_some_replies_defers_the_unanswered() -> None:
    """Someone has the post: a 451 to the client would duplicate it, so only the rest wait."""
    handler = Upstream(data=["250 2.1.5 Ok", "250 2.1.5 Ok"], drop_at="after-first-reply")
    with running(handler, lmtp=True) as upstream:
        result = send(upstream, "lmtp", recipients=[LIST, OTHER])
    assert result.accepted == (LIST,)
    assert result.deferred == (OTHER,)
    assert result.client_reply().startswith("250 ")


# An unavailable upstream


def test_a_closed_port_is_an_unavailable_upstream(protocol: Literal["smtp", "lmtp"]) -> None:
    with pytest.raises(UpstreamUnavailable, match="unavailable"):
        send(HostPort("127.0.0.1", free_port()), protocol)


def test_an_upstream_slower_than_the_timeout_is_unavailable(
    protocol: Literal["smtp", "lmtp"],
) -> None:
    handler = Upstream(data=["250 Ok"] if protocol == "lmtp" else "250 Ok", delay=3.0)
    with (
        running(handler, lmtp=protocol == "lmtp") as upstream,
        pytest.raises(UpstreamUnavailable, match="Timeout"),
    ):
        send(upstream, protocol, timeout=0.3)


@pytest.mark.parametrize("drop_at", ["rcpt", "data"])
def test_an_upstream_closing_mid_transaction_is_unavailable(
    protocol: Literal["smtp", "lmtp"], drop_at: Literal["rcpt", "data"]
) -> None:
    handler = Upstream(data=["250 Ok"] if protocol == "lmtp" else "250 Ok", drop_at=drop_at)
    with running(handler, lmtp=protocol == "lmtp") as upstream, pytest.raises(UpstreamUnavailable):
        send(upstream, protocol)


def test_a_421_before_the_post_is_taken_is_unavailable(protocol: Literal["smtp", "lmtp"]) -> None:
    handler = Upstream(rcpt={LIST: "421 4.3.2 Shutting down"})
    with (
        running(handler, lmtp=protocol == "lmtp") as upstream,
        pytest.raises(UpstreamUnavailable, match="421"),
    ):
        send(upstream, protocol)


def test_relaying_to_nobody_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="recipient"):
        send(HostPort("127.0.0.1", free_port()), recipients=[])
