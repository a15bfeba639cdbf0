"""Recipient routing: every rule of the table, refusals and one kind per transaction."""

from __future__ import annotations

import pytest

from rules.routing import (
    RELAY_DENIED_REPLY,
    RULES,
    SEND_SEPARATELY_REPLY,
    UNKNOWN_LOCAL_REPLY,
    Route,
    RouteKind,
    RoutingConfigError,
    RoutingTable,
    TransactionKind,
    most_specific,
    must_send_separately,
    rcpt_reply,
    route,
    specificity,
    transaction_kind,
)
from rules.tokens import Bounce, Case, Confirm, Detail, Director, Moderate, Signed, Unknown

TABLE = RoutingTable.build(
    conduct_address="conduct@Example.org",
    local_domains=["example.org", "Example.NET"],
    lists=["dev@lists.example.org", "Announce@Lists.Example.org", "x-request@lists.example.org"],
    list_domains=["groups.example.com"],
    postmaster="hostmaster@example.org",
)


def test_the_rule_table_ends_with_a_rule_that_matches_everything() -> None:
    assert RULES[-1][0] == "relay-denied"
    assert len({rule for rule, _kind, _matcher in RULES}) == len(RULES)


def test_conduct_address_routes_to_conduct_with_no_detail() -> None:
    result = route(TABLE, "conduct@example.org")
    assert (result.kind, result.rule, result.detail) == (RouteKind.CONDUCT, "conduct-address", None)
    assert result.accepted
    assert result.reply is None


def test_conduct_address_is_matched_case_insensitively_and_in_angle_brackets() -> None:
    assert route(TABLE, "<CONDUCT@EXAMPLE.ORG>").rule == "conduct-address"


@pytest.mark.parametrize(
    ("recipient", "detail"),
    [
        ("conduct+42@example.org", Case(42)),
        ("conduct+42-ABCDEFGHIJKLMNOPQRST@Example.Org", Signed(42, "abcdefghijklmnopqrst")),
        ("conduct+moderate@example.org", Moderate()),
        ("conduct+confirm-abc@example.org", Confirm("abc")),
        ("conduct+director@example.org", Director()),
        ("conduct+bounce-xyz@example.org", Bounce("xyz")),
        ("conduct+whatever@example.org", Unknown("whatever")),
        ("conduct+@example.org", None),
    ],
)
def test_every_conduct_subaddress_is_accepted_with_its_parsed_detail(
    recipient: str, detail: object
) -> None:
    result = route(TABLE, recipient)
    assert (result.kind, result.rule, result.detail) == (
        RouteKind.CONDUCT,
        "conduct-subaddress",
        detail,
    )


def test_conduct_local_part_at_another_local_domain_is_unknown() -> None:
    assert route(TABLE, "conduct@example.net").kind is RouteKind.UNKNOWN_LOCAL


def test_list_address_routes_to_the_list_with_bans() -> None:
    result = route(TABLE, "DEV@LISTS.EXAMPLE.ORG")
    assert (result.kind, result.rule) == (RouteKind.LIST, "list-address")
    assert result.list_address == "dev@lists.example.org"
    assert result.bans_apply


def test_list_configured_in_mixed_case_is_matched() -> None:
    assert route(TABLE, "announce@lists.example.org").list_address == "announce@lists.example.org"


@pytest.mark.parametrize("suffix", ["join", "subscribe", "request"])
def test_ban_applies_to_join_subscribe_and_request_addresses(suffix: str) -> None:
    result = route(TABLE, f"dev-{suffix}@lists.example.org")
    assert (result.kind, result.rule) == (RouteKind.LIST, "list-server-address")
    assert result.list_address == "dev@lists.example.org"
    assert result.bans_apply


@pytest.mark.parametrize("suffix", ["leave", "unsubscribe", "owner", "bounces", "confirm"])
def test_ban_never_applies_to_leave_unsubscribe_owner_bounces_confirm(suffix: str) -> None:
    result = route(TABLE, f"dev-{suffix}@lists.example.org")
    assert (result.kind, result.rule) == (RouteKind.LIST, "list-server-address")
    assert result.list_address == "dev@lists.example.org"
    assert not result.bans_apply


def test_mailman_suffix_with_a_plus_suffix_routes_to_its_list() -> None:
    bounce = route(TABLE, "dev-bounces+foo=bar.org@lists.example.org")
    assert (bounce.rule, bounce.list_address, bounce.bans_apply) == (
        "list-server-address",
        "dev@lists.example.org",
        False,
    )
    confirm = route(TABLE, "Dev-Confirm+ABC123@Lists.Example.org")
    assert (confirm.list_address, confirm.bans_apply) == ("dev@lists.example.org", False)
    join = route(TABLE, "dev-join+x@lists.example.org")
    assert (join.list_address, join.bans_apply) == ("dev@lists.example.org", True)


def test_list_whose_name_ends_like_a_suffix_is_matched_exactly_first() -> None:
    result = route(TABLE, "x-request@lists.example.org")
    assert (result.rule, result.list_address, result.bans_apply) == (
        "list-address",
        "x-request@lists.example.org",
        True,
    )


def test_a_tagged_list_address_is_the_list_and_its_bans_apply() -> None:
    # As Mailman 3 reads it: the +suffix of a list address is dropped.
    result = route(TABLE, "Dev+Topic@lists.example.org")
    assert (result.kind, result.rule, result.list_address, result.bans_apply) == (
        RouteKind.LIST,
        "list-address",
        "dev@lists.example.org",
        True,
    )
    assert result.recipient == "Dev+Topic@lists.example.org"  # relayed as written


@pytest.mark.parametrize(
    "recipient",
    [
        "nosuchlist@lists.example.org",
        "nosuchlist+tag@lists.example.org",
        "dev-admin@lists.example.org",
    ],
)
def test_other_addresses_at_a_served_lists_domain_are_unknown(recipient: str) -> None:
    result = route(TABLE, recipient)
    assert (result.kind, result.rule) == (RouteKind.UNKNOWN_LOCAL, "unknown-local")
    assert result.reply == UNKNOWN_LOCAL_REPLY == "550 5.1.1 No such user here"
    assert not result.accepted


@pytest.mark.parametrize(
    ("recipient", "list_address", "bans_apply"),
    [
        ("anything@groups.example.com", "anything@groups.example.com", True),
        ("Team@GROUPS.example.COM", "team@groups.example.com", True),
        ("team+tag@groups.example.com", "team@groups.example.com", True),
        ("team-join@groups.example.com", "team@groups.example.com", True),
        ("team-request+x@groups.example.com", "team@groups.example.com", True),
        ("team-owner@groups.example.com", "team@groups.example.com", False),
        ("team-bounces+a=b.org@groups.example.com", "team@groups.example.com", False),
        ("team-unsubscribe@groups.example.com", "team@groups.example.com", False),
        ("my-team@groups.example.com", "my-team@groups.example.com", True),
    ],
)
def test_every_address_in_a_list_domain_is_a_list(
    recipient: str, list_address: str, bans_apply: bool
) -> None:
    result = route(TABLE, recipient)
    assert (result.kind, result.rule) == (RouteKind.LIST, "list-domain")
    assert (result.list_address, result.bans_apply) == (list_address, bans_apply)


@pytest.mark.parametrize(
    "recipient",
    [
        "postmaster@example.org",
        "PostMaster@EXAMPLE.NET",
        "postmaster@lists.example.org",
        "postmaster@groups.example.com",
        "Postmaster",
        "<postmaster>",
    ],
)
def test_postmaster_of_every_local_and_list_domain_goes_to_the_postmaster(recipient: str) -> None:
    result = route(TABLE, recipient)
    assert (result.kind, result.rule) == (RouteKind.POSTMASTER, "postmaster")
    assert result.forward_to == "hostmaster@example.org"


def test_postmaster_elsewhere_is_relay_denied() -> None:
    assert route(TABLE, "postmaster@elsewhere.example").kind is RouteKind.RELAY_DENIED


def test_unknown_address_in_a_local_domain_gets_550() -> None:
    result = route(TABLE, "nobody@EXAMPLE.net")
    assert (result.kind, result.rule, result.reply) == (
        RouteKind.UNKNOWN_LOCAL,
        "unknown-local",
        "550 5.1.1 No such user here",
    )


@pytest.mark.parametrize(
    "recipient",
    [
        "someone@elsewhere.example",
        "conduct@example.org.evil.example",
        "dev@sub.lists.example.org",
        "conduct",
        "user@bad..domain",
        "",
    ],
)
def test_anything_else_is_relay_denied(recipient: str) -> None:
    result = route(TABLE, recipient)
    assert (result.kind, result.rule) == (RouteKind.RELAY_DENIED, "relay-denied")
    assert result.reply == RELAY_DENIED_REPLY == "554 5.7.1 relay access denied"


def test_conduct_domain_is_local_even_when_not_configured() -> None:
    table = RoutingTable.build("conduct@example.org", [], [], [], "hostmaster@example.org")
    assert route(table, "nobody@example.org").kind is RouteKind.UNKNOWN_LOCAL
    assert route(table, "postmaster@example.org").kind is RouteKind.POSTMASTER


def test_idna_domains_compare_as_a_labels() -> None:
    table = RoutingTable.build("conduct@bücher.example", [], [], [], "pm@bücher.example")
    assert route(table, "conduct@xn--bcher-kva.example").rule == "conduct-address"
    assert route(table, "conduct+42@BÜCHER.example").detail == Case(42)


@pytest.mark.parametrize(
    ("field", "value"),
    [("conduct_address", "conduct"), ("lists", ["nolist"]), ("local_domains", ["bad..dom"])],
)
def test_build_refuses_a_malformed_address_or_domain(field: str, value: object) -> None:
    arguments: dict[str, object] = {
        "conduct_address": "conduct@example.org",
        "local_domains": [],
        "lists": [],
        "list_domains": [],
        "postmaster": "pm@example.org",
    }
    arguments[field] = value
    with pytest.raises(RoutingConfigError):
        RoutingTable.build(**arguments)  # type: ignore[arg-type]


def test_transaction_kind_groups_postmaster_with_conduct_mail() -> None:
    assert transaction_kind(route(TABLE, "conduct@example.org")) is TransactionKind.CONDUCT
    assert transaction_kind(route(TABLE, "postmaster@example.org")) is TransactionKind.CONDUCT
    assert transaction_kind(route(TABLE, "dev@lists.example.org")) is TransactionKind.LIST
    assert transaction_kind(route(TABLE, "nobody@example.org")) is None
    assert transaction_kind(route(TABLE, "x@elsewhere.example")) is None


def test_first_accepted_recipient_decides_and_the_other_kind_gets_452() -> None:
    post = route(TABLE, "dev@lists.example.org")
    report = route(TABLE, "conduct@example.org")
    assert must_send_separately(TransactionKind.CONDUCT, post)
    assert must_send_separately(TransactionKind.LIST, report)
    assert rcpt_reply(TransactionKind.CONDUCT, post) == SEND_SEPARATELY_REPLY
    assert SEND_SEPARATELY_REPLY == "452 4.5.3 Send separately"


def test_same_kind_or_first_recipient_is_accepted() -> None:
    assert rcpt_reply(None, route(TABLE, "dev@lists.example.org")) is None
    assert rcpt_reply(TransactionKind.LIST, route(TABLE, "announce@lists.example.org")) is None
    assert rcpt_reply(TransactionKind.CONDUCT, route(TABLE, "postmaster@example.org")) is None
    assert not must_send_separately(None, route(TABLE, "conduct@example.org"))


def test_refused_recipient_keeps_its_own_reply_whatever_the_transaction() -> None:
    assert rcpt_reply(TransactionKind.LIST, route(TABLE, "x@elsewhere.example")) == (
        RELAY_DENIED_REPLY
    )
    assert rcpt_reply(None, route(TABLE, "nobody@example.org")) == UNKNOWN_LOCAL_REPLY
    assert not must_send_separately(TransactionKind.LIST, route(TABLE, "nobody@example.org"))


def test_specificity_is_a_total_order_signed_case_functions_then_bare() -> None:
    order: list[Detail] = [
        Signed(1, "t"),
        Case(1),
        Confirm("c"),
        Bounce("b"),
        Moderate(),
        Director(),
    ]
    values = [specificity(detail) for detail in order]
    assert values == sorted(values, reverse=True)
    assert len(set(values)) == len(values)
    assert specificity(None) == specificity(Unknown("x")) < specificity(Director())


def test_most_specific_conduct_recipient_routes_the_message() -> None:
    routes = [
        route(TABLE, "conduct@example.org"),
        route(TABLE, "dev@lists.example.org"),
        route(TABLE, "conduct+42@example.org"),
        route(TABLE, "conduct+42-abcdefghijklmnopqrst@example.org"),
    ]
    chosen = most_specific(routes)
    assert chosen is not None
    assert chosen.detail == Signed(42, "abcdefghijklmnopqrst")


def test_most_specific_prefers_the_first_on_ties_and_none_without_conduct() -> None:
    first = route(TABLE, "conduct+1@example.org")
    second = route(TABLE, "conduct+2@example.org")
    assert most_specific([first, second]) is first
    assert most_specific([route(TABLE, "dev@lists.example.org")]) is None
    assert most_specific([]) is None


def test_route_records_the_recipient_as_given() -> None:
    assert route(TABLE, "Conduct+42@Example.org") == Route(
        kind=RouteKind.CONDUCT,
        rule="conduct-subaddress",
        recipient="Conduct+42@Example.org",
        detail=Case(42),
    )
