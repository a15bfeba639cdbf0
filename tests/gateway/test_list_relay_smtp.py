"""List posts end to end: a client, the SMTP ingress and relay, a real upstream and smarthost."""

from __future__ import annotations

import smtplib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.gateway.list_relay_setup import (
    ANNOUNCE,
    BOUND,
    DEV,
    SQLITE,
    ListGateway,
    post,
    settle,
)


def refusal(gateway: ListGateway, recipients: list[str], data: bytes) -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("envelope@good.example", recipients, data)
    return refused.value.smtp_code, refused.value.smtp_error


# ban_action and the three identities --------------------------------------------------


def test_discard_answers_250_drops_the_post_and_records_the_decision(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(ban_action="discard")
    ban = gateway.ban("poster@example.net")
    assert gateway.send("poster@example.net", [DEV], post()) == {}
    assert gateway.audit("post-discarded") == [
        {"list": DEV, "message_id": "post1@example.net", "rule": "ban"}
    ]
    hits = gateway.audit("ban-hit")
    assert {(h["identity"], h["ban"], h["verdict"]) for h in hits} == {
        ("envelope", ban, "discard"),
        ("from", ban, "discard"),
    }
    settle()
    assert gateway.upstream.messages == []
    assert gateway.smarthost.messages == []  # nobody is told of a discard
    assert gateway.held_posts() == []


@SQLITE
def test_reject_refuses_the_whole_message_naming_only_the_banned_list(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway()
    gateway.ban("poster@example.net", list_address=DEV)
    code, text = refusal(gateway, [DEV, ANNOUNCE], post())
    assert (code, text) == (550, b"5.7.1 Posting to dev@lists.example.org is not permitted")
    settle(0.5)
    assert gateway.upstream.messages == []


@SQLITE
@pytest.mark.parametrize("action", ["hold", "discard"])
def test_hold_or_discard_lets_the_other_list_have_the_post(
    start_list_gateway: Any, action: str
) -> None:
    gateway = start_list_gateway(ban_action=action)
    gateway.ban("poster@example.net", list_address=DEV)
    assert gateway.send("envelope@good.example", [DEV, ANNOUNCE], post()) == {}
    [relayed] = gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)
    assert relayed.rcpt_tos == (ANNOUNCE,)
    assert relayed.data.endswith(post())
    assert [row.list for row in gateway.held_posts()] == ([DEV] if action == "hold" else [])
    [hit] = gateway.audit("ban-hit")
    assert (hit["identity"], hit["list"], hit["verdict"]) == ("from", DEV, action)


@SQLITE
def test_a_ban_on_the_sender_header_refuses_the_post(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    ban = gateway.ban("secretary@banned.example")
    data = post(extra=b"Sender: Secretary <secretary@banned.example>\r\n")
    code, text = refusal(gateway, [DEV], data)
    assert (code, text) == (550, b"5.7.1 Posting to dev@lists.example.org is not permitted")
    [hit] = gateway.audit("ban-hit")
    assert (hit["identity"], hit["ban"]) == ("sender", ban)
    settle(0.5)
    assert gateway.upstream.messages == []


@SQLITE
def test_reply_to_is_never_an_identity(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    gateway.ban("someone@banned.example")
    data = post(extra=b"Reply-To: someone@banned.example\r\n")
    assert gateway.send("poster@example.net", [DEV], data) == {}
    gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)


@SQLITE
def test_a_timed_ban_names_its_end_and_never_its_reason(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    gateway.ban("poster@example.net", expires_at=datetime(2099, 1, 2, 3, 4, tzinfo=UTC))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        gateway.send("poster@example.net", [DEV], post())
    assert refused.value.recipients[DEV] == (
        550,
        b"5.7.1 Posting to dev@lists.example.org is not permitted until 2099-01-02 03:04 UTC",
    )
    code, text = refusal(gateway, [DEV], post())  # the same ban, found in From at DATA
    assert (code, text) == (
        550,
        b"5.7.1 Posting to dev@lists.example.org is not permitted until 2099-01-02 03:04 UTC",
    )
    assert b"private reason" not in text


# the upstream's answer is the client's answer -----------------------------------------


@SQLITE
def test_an_upstream_refusal_reaches_the_client_as_given(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    gateway.upstream.recorder.answer = "554 5.7.1 Message rejected as spam"
    code, text = refusal(gateway, [DEV], post())
    assert (code, text) == (554, b"5.7.1 Message rejected as spam")
    settle()
    assert gateway.outbox() == []  # a before-queue proxy: nothing kept to retry


@SQLITE
def test_a_slow_upstream_within_the_deadline_still_answers_the_client(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(timeout="30s", upstream_delay=3.0)
    assert gateway.send("poster@example.net", [DEV], post()) == {}
    assert len(gateway.upstream.messages) == 1


# SMTP smuggling on the list path ------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<dev@lists.example.org>\r\nDATA\r\n"
    b"From: smuggler@evil.example\r\nMessage-ID: <smuggled@evil.example>\r\n\r\nforged\r\n"
)


@SQLITE
@pytest.mark.parametrize(
    "separator",
    [b"\n.\n", b"\r\n.\n", b"\r.\r", b"\n.\r\n"],
    ids=["lf", "crlf-lf", "cr", "lf-crlf"],
)
def test_a_bare_line_end_dot_never_makes_two_posts_upstream(
    start_list_gateway: Any, separator: bytes
) -> None:
    gateway = start_list_gateway()
    first = post(body=b"first body")[: -len(b"\r\n")]
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=60) as client:
        client.ehlo()
        client.mail("poster@example.net")
        client.rcpt(DEV)
        assert client.docmd("DATA")[0] == 354
        client.send(first + separator + SMUGGLED + b".\r\n")
        code, _ = client.getreply()
        assert code == 250
        # Had the smuggled commands run, their replies would come before this one.
        assert client.noop() == (250, b"OK")
    [relayed] = gateway.upstream.wait_for(lambda m: len(m) >= 1, BOUND)
    settle(0.5)
    assert len(gateway.upstream.messages) == 1
    assert relayed.mail_from == "poster@example.net"
    assert b"<post1@example.net>" in relayed.data
    assert b"forged" in relayed.data  # inside the one post, as its text


# load ---------------------------------------------------------------------------------


@SQLITE
def test_two_hundred_concurrent_clients_each_relay_one_post_once(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()

    def one(n: int) -> dict[str, tuple[int, bytes]]:
        return gateway.send(f"p{n}@example.net", [DEV], post(f"load-{n}@example.net"))

    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(one, range(200)))
    assert answers == [{}] * 200
    found = gateway.upstream.wait_for(lambda m: len(m) >= 200, BOUND)
    settle(0.5)
    ids = sorted(m.data.split(b"Message-ID: <", 1)[1].split(b">", 1)[0] for m in found)
    assert ids == sorted(f"load-{n}@example.net".encode() for n in range(200))
    assert len(gateway.upstream.messages) == 200
