"""List relay defects found by audit, each through the real SMTP ingress and real sinks."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from tests.gateway.list_relay_setup import (
    ANNOUNCE,
    BOUND,
    DEV,
    SQLITE,
    post,
    settle,
)

# 1. A released post goes to its own envelope recipients, with a trace field and SMTPUTF8.


@SQLITE
@pytest.mark.parametrize(
    ("recipient", "list_domains"),
    [
        ("dev-request@lists.example.org", ""),
        ("dev-join@lists.example.org", ""),
        ("team+tag@groups.example.org", "groups.example.org"),
    ],
)
def test_a_released_post_goes_to_the_address_it_was_sent_to(
    start_list_gateway: Any, recipient: str, list_domains: str
) -> None:
    gateway = start_list_gateway(ban_action="hold", list_domains=list_domains)
    gateway.ban("poster@example.net")
    assert gateway.send("poster@example.net", [recipient], post(to=recipient)) == {}
    [row] = gateway.held_posts()
    gateway.release(row.id)
    [released] = gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)
    assert released.rcpt_tos == (recipient,)
    assert released.mail_from == "poster@example.net"
    assert released.data.endswith(post(to=recipient))


@SQLITE
def test_a_post_held_for_two_addresses_of_one_list_is_released_to_both(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(ban_action="hold")
    gateway.ban("poster@example.net")
    recipients = [DEV, "dev-request@lists.example.org"]
    assert gateway.send("poster@example.net", recipients, post()) == {}
    for row in gateway.held_posts():
        gateway.release(row.id)
    found = gateway.upstream.wait_for(lambda m: len(m) == 2, BOUND)
    assert sorted(m.rcpt_tos[0] for m in found) == sorted(recipients)


@SQLITE
def test_a_released_post_carries_one_received_field_like_a_relayed_one(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(ban_action="hold")
    gateway.ban("poster@example.net")
    gateway.send("poster@example.net", [DEV], post())
    [row] = gateway.held_posts()
    gateway.release(row.id)
    [released] = gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)
    assert released.data.startswith(b"Received: from ")
    assert b"by mx.example.org with ESMTP" in released.data
    head = released.data[: -len(post())]
    assert head.count(b"Received:") == 1


@SQLITE
def test_a_released_post_from_a_utf8_address_is_relayed_with_smtputf8(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(ban_action="hold", upstream_smtputf8=True)
    gateway.ban("*@exämple.net")
    sender = "pöster@exämple.net"
    data = post(sender=sender).replace(b"Poster <", "Pöster <".encode())
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=60) as client:
        client.ehlo()
        assert client.sendmail(sender, [DEV], data, mail_options=["SMTPUTF8"]) == {}
    [row] = gateway.held_posts()
    gateway.release(row.id)
    [released] = gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)
    assert released.mail_from == sender
    assert released.data.endswith(data)


# 3. A retried copy the list server refuses for good is told to the list's moderators.


@SQLITE
def test_a_released_post_the_list_server_refuses_is_told_to_the_moderators(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(ban_action="hold")
    gateway.ban("poster@example.net")
    gateway.send("poster@example.net", [DEV], post())
    gateway.notices_to("carol@example.org")  # the held-post notice
    gateway.upstream.recorder.answer = "554 5.7.1 Poster is not a member"
    [row] = gateway.held_posts()
    gateway.release(row.id)
    notices = gateway.notices_to("carol@example.org", count=2)
    refusal = notices[1]
    assert b"Refused by the list server" in refusal.data
    assert b"Poster is not a member" in refusal.data
    assert [event["list"] for event in gateway.audit("upstream-refused")] == [DEV]
    settle()
    assert all(m.rcpt_tos != ("poster@example.net",) for m in gateway.smarthost.messages)
    assert [m.rcpt_tos for m in gateway.smarthost.messages].count(("dan@example.org",)) == 0


@SQLITE
def test_an_lmtp_deferral_refused_on_retry_is_told_to_the_moderators(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway(protocol="lmtp")
    recorder = gateway.upstream.recorder
    recorder.data_answers[ANNOUNCE] = "452 4.2.2 Mailbox full"
    assert gateway.send("poster@example.net", [DEV, ANNOUNCE], post()) == {}
    recorder.data_answers[ANNOUNCE] = "550 5.2.1 List closed"
    [notice] = gateway.notices_to("dan@example.org")
    assert b"List closed" in notice.data
    assert [event["list"] for event in gateway.audit("upstream-refused")] == [ANNOUNCE]
    settle()
    assert all(m.rcpt_tos != ("poster@example.net",) for m in gateway.smarthost.messages)


# 4. A hold is stored once, however often the client retries the same message.


def test_a_retried_message_is_held_and_announced_once(start_list_gateway: Any) -> None:
    gateway = start_list_gateway(ban_action="hold")
    gateway.ban("poster@example.net", list_address=DEV)
    gateway.upstream.stop()  # announce@ cannot be reached: the whole message gets 451
    for _ in range(3):
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            gateway.send("poster@example.net", [DEV, ANNOUNCE], post())
        assert deferred.value.smtp_code == 451
    gateway.upstream.start()
    assert gateway.send("poster@example.net", [DEV, ANNOUNCE], post()) == {}
    assert len(gateway.held_posts()) == 1
    assert len(gateway.audit("post-held")) == 1
    gateway.notices_to("carol@example.org")
    settle()
    assert [m.rcpt_tos for m in gateway.smarthost.messages] == [("carol@example.org",)]
    assert [m.rcpt_tos for m in gateway.upstream.messages] == [(ANNOUNCE,)]


@SQLITE
def test_the_same_post_with_another_body_is_held_again(start_list_gateway: Any) -> None:
    gateway = start_list_gateway(ban_action="hold")
    gateway.ban("poster@example.net")
    gateway.send("poster@example.net", [DEV], post())
    gateway.send("poster@example.net", [DEV], post(body=b"an edited body\r\n"))
    assert len(gateway.held_posts()) == 2


# 6. One deadline for the whole relay, below [smtp] timeout: 451, never a dropped client.


@SQLITE
def test_a_list_server_slower_than_the_smtp_timeout_gives_451(start_list_gateway: Any) -> None:
    gateway = start_list_gateway(timeout="4s", upstream_delay=8.0)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        gateway.send("poster@example.net", [DEV], post())
    assert deferred.value.smtp_code == 451
    assert deferred.value.smtp_error.startswith(b"4.4.1")


# 7. `From :` (space before the colon) is a From field.


@SQLITE
def test_a_from_field_with_a_space_before_the_colon_is_checked(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    gateway.ban("bob@banned.example")
    data = b"From : bob@banned.example\r\n" + post()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("ok@good.example", [DEV], data)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.6.0")
    alone = post(sender="bob@banned.example").replace(b"From:", b"From :")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("ok@good.example", [DEV], alone)
    assert refused.value.smtp_error == b"5.7.1 Posting to dev@lists.example.org is not permitted"
    sender = post().replace(b"Subject:", b"Sender\t: bob@banned.example\r\nSubject:")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("ok@good.example", [DEV], sender)
    assert refused.value.smtp_code == 550
    assert gateway.upstream.messages == []


# 8. One list named once; `dev+tag@` reaches the list as Mailman's own +suffix addresses do.


@SQLITE
def test_a_refusal_names_a_list_once_when_two_of_its_addresses_were_used(
    start_list_gateway: Any,
) -> None:
    gateway = start_list_gateway()
    gateway.ban("poster@example.net")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("ok@good.example", [DEV, "dev-join@lists.example.org"], post())
    assert refused.value.smtp_error == b"5.7.1 Posting to dev@lists.example.org is not permitted"


@SQLITE
def test_a_tagged_list_address_reaches_the_list_and_its_bans_apply(start_list_gateway: Any) -> None:
    gateway = start_list_gateway()
    assert gateway.send("poster@example.net", ["dev+topic@lists.example.org"], post()) == {}
    [relayed] = gateway.upstream.wait_for(lambda m: len(m) == 1, BOUND)
    assert relayed.rcpt_tos == ("dev+topic@lists.example.org",)
    gateway.ban("poster@example.net", list_address=DEV)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        gateway.send("poster@example.net", ["dev+topic@lists.example.org"], post())
    [(code, text)] = refused.value.recipients.values()
    assert (code, text) == (550, b"5.7.1 Posting to dev@lists.example.org is not permitted")


# 5. A list-scoped ban on a Unicode list domain applies, however the list was written.


@SQLITE
@pytest.mark.parametrize("written", ["dev@bücher.example", "DEV@XN--BCHER-KVA.EXAMPLE"])
def test_a_ban_on_a_unicode_list_domain_applies(start_list_gateway: Any, written: str) -> None:
    gateway = start_list_gateway(
        lists="dev@Bücher.example",
        moderators="dev@bücher.example = erin@example.org",
        ban_action="hold",
    )
    gateway.ban("poster@example.net", list_address=written)
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=60) as client:
        client.ehlo()
        refused = client.sendmail(
            "poster@example.net", ["dev@bücher.example"], post(), mail_options=["SMTPUTF8"]
        )
    assert refused == {}
    [row] = gateway.held_posts()
    assert row.list == "dev@xn--bcher-kva.example"
    gateway.notices_to("erin@example.org")
    assert gateway.upstream.messages == []
