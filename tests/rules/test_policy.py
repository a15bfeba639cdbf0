"""Policy delegation requests: parsing, and DUNNO unless a banned envelope sender posts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rules.bans import Ban, BanIndex, parse_pattern
from rules.policy import DUNNO, PolicyDecision, PolicyRequest, decide, parse_request
from rules.routing import RoutingTable

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEV = "dev@lists.example.org"
ANNOUNCE = "announce@lists.example.org"
TABLE = RoutingTable.build(
    conduct_address="conduct@example.org",
    local_domains=["example.org"],
    lists=[DEV, ANNOUNCE],
    list_domains=["groups.example.com"],
    postmaster="hostmaster@example.org",
)


def ban(
    pattern: str,
    ban_id: int = 1,
    list_address: str | None = DEV,
    expires_at: datetime | None = None,
) -> Ban:
    return Ban(
        id=ban_id,
        pattern=parse_pattern(pattern),
        list=list_address,
        reason="SECRET-REASON harassment",
        created_by="alice@example.org",
        created_at=NOW - timedelta(days=1),
        expires_at=expires_at,
        case=4242,
    )


INDEX = BanIndex(
    [
        ban("spammer@bad.example", 1),
        ban("*@worse.example", 2, list_address=None),
        ban("timed@bad.example", 3, expires_at=datetime(2026, 4, 2, 7, 30, tzinfo=UTC)),
        ban("expired@bad.example", 4, expires_at=NOW),
        ban("other@bad.example", 5, list_address=ANNOUNCE),
    ]
)


def postfix_lines(**overrides: str) -> list[str]:
    """A request as Postfix 3.7 sends it at RCPT time."""
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.1",
        "client_name": "mail.bad.example",
        "reverse_client_name": "mail.bad.example",
        "helo_name": "mail.bad.example",
        "sender": "spammer@bad.example",
        "recipient": DEV,
        "recipient_count": "0",
        "queue_id": "",
        "instance": "123.456.7",
        "size": "0",
        "etrn_domain": "",
        "stress": "",
        "sasl_method": "",
        "ccert_subject": "",
        "encryption_protocol": "",
        "policy_context": "",
        "server_address": "127.0.0.1",
        "server_port": "25",
        "compatibility_level": "3.6",
        "mail_version": "3.7.11",
    }
    attributes.update(overrides)
    return [f"{name}={value}" for name, value in attributes.items()]


def decide_for(zone: ZoneInfo | None = None, **overrides: str) -> PolicyDecision:
    request = parse_request(postfix_lines(**overrides))
    return decide(request, TABLE, INDEX.match, NOW, zone or ZoneInfo("UTC"))


def test_a_postfix_request_is_parsed_and_unknown_attributes_are_ignored() -> None:
    request = parse_request(postfix_lines(queue_id="4AB12", future_attribute="x"))
    assert request == PolicyRequest(
        request="smtpd_access_policy",
        protocol_state="RCPT",
        sender="spammer@bad.example",
        recipient=DEV,
        queue_id="4AB12",
    )


def test_a_value_may_contain_equals_signs() -> None:
    request = parse_request(postfix_lines(sender="prvs=1234abcd=spammer@bad.example"))
    assert request.sender == "prvs=1234abcd=spammer@bad.example"


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([*postfix_lines(), "no equals sign here"], "no-equals-sign"),
        ([*postfix_lines(), "=value"], "empty-name"),
        ([*postfix_lines(), "sender=someone@else.example"], "duplicate-attribute"),
        (postfix_lines(request="junk"), "not-access-policy"),
        (
            [line for line in postfix_lines() if not line.startswith("request=")],
            "not-access-policy",
        ),
        (postfix_lines(protocol_state=""), "no-protocol-state"),
        ([], "not-access-policy"),
    ],
)
def test_a_malformed_request_is_flagged_and_answered_dunno(lines: list[str], reason: str) -> None:
    request = parse_request(lines)
    assert request.malformed == reason
    decision = decide(request, TABLE, INDEX.match, NOW, UTC)
    assert (decision.action, decision.rule) == (DUNNO, "malformed")


def test_a_banned_envelope_sender_posting_to_the_list_is_refused_with_550() -> None:
    decision = decide_for()
    assert decision.action == f"550 5.7.1 Posting to {DEV} is not permitted"
    assert decision.rule == "banned"
    assert decision.ban is not None
    assert decision.ban.id == 1
    assert decision.list_address == DEV
    assert decision.answer == f"action=550 5.7.1 Posting to {DEV} is not permitted\n\n"


@pytest.mark.parametrize(
    "sender",
    ["Spammer+tag@Bad.Example", "SPAMMER@BAD.EXAMPLE", "prvs=1234abcd=spammer@bad.example"],
)
def test_subaddress_case_and_batv_variants_of_a_banned_sender_are_refused(sender: str) -> None:
    assert decide_for(sender=sender).rule == "banned"


def test_a_timed_ban_names_its_end_in_the_configured_zone() -> None:
    decision = decide_for(zone=ZoneInfo("Europe/Berlin"), sender="timed@bad.example")
    assert decision.action == (
        f"550 5.7.1 Posting to {DEV} is not permitted until 2026-04-02 09:30 CEST"
    )


def test_a_refusal_never_carries_the_ban_reason_or_case() -> None:
    action = decide_for().action
    assert "SECRET" not in action
    assert "harassment" not in action
    assert "4242" not in action


def test_a_ban_that_ended_at_now_lets_the_post_through() -> None:
    decision = decide_for(sender="expired@bad.example")
    assert (decision.action, decision.rule) == (DUNNO, "not-banned")


def test_a_ban_on_another_list_does_not_apply() -> None:
    assert decide_for(sender="other@bad.example").action == DUNNO
    assert decide_for(sender="other@bad.example", recipient=ANNOUNCE).rule == "banned"


def test_an_all_lists_domain_ban_covers_every_list_and_list_domain() -> None:
    for recipient in (DEV, ANNOUNCE, "anything@groups.example.com"):
        assert decide_for(sender="someone@worse.example", recipient=recipient).rule == "banned"


@pytest.mark.parametrize("recipient", [f"dev-join@{DEV.split('@')[1]}", "DEV@Lists.Example.org"])
def test_bans_apply_to_the_list_and_its_join_address(recipient: str) -> None:
    assert decide_for(recipient=recipient).rule == "banned"


@pytest.mark.parametrize(
    "local", ["dev-leave", "dev-unsubscribe", "dev-owner", "dev-bounces+x=y.example"]
)
def test_a_banned_sender_may_still_leave_reach_the_owners_and_answer_probes(local: str) -> None:
    decision = decide_for(recipient=f"{local}@lists.example.org")
    assert (decision.action, decision.rule) == (DUNNO, "bans-do-not-apply")


@pytest.mark.parametrize(
    "recipient",
    ["conduct@example.org", "postmaster@lists.example.org", "nobody@example.org", "x@else.example"],
)
def test_recipients_that_are_not_lists_get_dunno(recipient: str) -> None:
    decision = decide_for(recipient=recipient)
    assert (decision.action, decision.rule) == (DUNNO, "not-a-list")


@pytest.mark.parametrize("sender", ["", "<>", "  "])
def test_the_null_sender_is_never_refused(sender: str) -> None:
    def lookup(_address: str, _list: str, _now: datetime) -> Ban:
        raise AssertionError("the null sender must not be looked up")

    request = parse_request(postfix_lines(sender=sender))
    decision = decide(request, TABLE, lookup, NOW, UTC)
    assert (decision.action, decision.rule) == (DUNNO, "null-sender")


@pytest.mark.parametrize("state", ["CONNECT", "EHLO", "MAIL", "DATA", "END-OF-MESSAGE", "VRFY"])
def test_only_rcpt_time_requests_are_judged(state: str) -> None:
    decision = decide_for(protocol_state=state)
    assert (decision.action, decision.rule) == (DUNNO, "not-rcpt")


def test_the_lookup_gets_the_raw_sender_the_list_and_now() -> None:
    seen: list[tuple[str, str, datetime]] = []

    def lookup(address: str, list_address: str, now: datetime) -> None:
        seen.append((address, list_address, now))

    decide(
        parse_request(postfix_lines(recipient="dev-join@lists.example.org")),
        TABLE,
        lookup,
        NOW,
        UTC,
    )
    assert seen == [("spammer@bad.example", DEV, NOW)]


def all_kinds_of_requests() -> Iterator[list[str]]:
    senders = ["", "spammer@bad.example", "ok@good.example", "timed@bad.example", "x@worse.example"]
    recipients = [DEV, "dev-leave@lists.example.org", "conduct@example.org", "a@b.example", ""]
    states = ["RCPT", "DATA", "END-OF-MESSAGE", ""]
    for sender in senders:
        for recipient in recipients:
            for state in states:
                yield postfix_lines(sender=sender, recipient=recipient, protocol_state=state)
    yield ["garbage"]


def test_the_only_actions_are_dunno_and_a_550_refusal() -> None:
    for lines in all_kinds_of_requests():
        action = decide(parse_request(lines), TABLE, INDEX.match, NOW, UTC).action
        assert action == DUNNO or action.startswith("550 5.7.1 Posting to "), action
        assert action.split()[0] not in {"OK", "PERMIT", "HOLD", "DISCARD", "REJECT"}
