"""Address normalisation, header parsing and conduct subaddresses."""

from __future__ import annotations

import pytest

from rules.addresses import (
    AddressError,
    domain_of,
    is_conduct,
    normalise,
    normalise_domain,
    parse_header_addresses,
    split,
    subaddress,
)
from rules.errors import GatewayError

CONDUCT = "conduct@example.org"


def test_normalise_lowercases_and_drops_subaddress() -> None:
    assert normalise("User+x@Example.COM") == "user@example.com"


def test_normalise_strips_angle_brackets_and_whitespace() -> None:
    assert normalise("  <Alice@Example.org>  ") == "alice@example.org"


def test_normalise_converts_idna_domain_to_a_labels() -> None:
    assert normalise("user@bücher.example") == "user@xn--bcher-kva.example"
    assert normalise("USER@XN--BCHER-KVA.example") == "user@xn--bcher-kva.example"


def test_normalise_drops_trailing_dot_of_domain() -> None:
    assert normalise("user@example.com.") == "user@example.com"


@pytest.mark.parametrize(
    "address",
    [
        "prvs=1234abcdef=user@example.com",
        "PRVS=0123456789=User+list@example.com",
        "btv1==0a1b2c3d==user@example.com",
        "prvs=1234=prvs=5678=user@example.com",
    ],
)
def test_normalise_removes_batv_tags(address: str) -> None:
    assert normalise(address) == "user@example.com"


def test_normalise_is_idempotent() -> None:
    once = normalise("<Prvs=1234=Bob+tag@Bücher.Example>")
    assert normalise(once) == once


def test_normalise_keeps_a_local_part_that_starts_with_the_delimiter() -> None:
    assert normalise("+tag@example.com") == "+tag@example.com"


def test_normalise_leaves_a_quoted_local_part_alone_but_lowercased() -> None:
    assert normalise('"John+Doe"@example.com') == '"john+doe"@example.com'


@pytest.mark.parametrize(
    "address",
    ["", "<>", "user", "@example.com", "user@", "a b@example.com", "x@a..b", "a@b@example.com"],
)
def test_normalise_refuses_what_is_not_local_at_domain(address: str) -> None:
    with pytest.raises(AddressError) as info:
        normalise(address)
    assert isinstance(info.value, GatewayError)
    assert "not an address" in str(info.value)


def test_normalise_domain_refuses_an_overlong_label() -> None:
    with pytest.raises(AddressError):
        normalise_domain("a" * 64 + ".example")


def test_split_and_domain_of_give_normalised_parts() -> None:
    assert split("Bob+x@Bücher.Example") == ("bob", "xn--bcher-kva.example")
    assert domain_of("bob@Example.ORG") == "example.org"


def test_parse_header_addresses_returns_display_names_and_addr_specs() -> None:
    value = '"Doe, Jane" <jane@example.com>, bob@example.org'
    assert parse_header_addresses(value) == [
        ("Doe, Jane", "jane@example.com"),
        ("", "bob@example.org"),
    ]


def test_parse_header_addresses_decodes_encoded_words() -> None:
    assert parse_header_addresses("=?utf-8?q?J=C3=BCrgen?= <j@example.org>") == [
        ("Jürgen", "j@example.org")
    ]


def test_parse_header_addresses_unfolds_folded_headers() -> None:
    assert parse_header_addresses("Foo\r\n <foo@example.org>") == [("Foo", "foo@example.org")]


def test_parse_header_addresses_flattens_groups() -> None:
    assert parse_header_addresses("team: a@example.org, b@example.org;") == [
        ("", "a@example.org"),
        ("", "b@example.org"),
    ]


@pytest.mark.parametrize("value", ["", "undisclosed-recipients:;", '"x" <>', "<@example.org>"])
def test_parse_header_addresses_never_returns_an_empty_addr_spec(value: str) -> None:
    assert parse_header_addresses(value) == []


def test_parse_header_addresses_does_not_raise_on_garbage() -> None:
    for value in ["<<<>>>", "\x00\x01", "a@b\udcff", "(((", '"unterminated <x@y']:
        assert all(spec for _name, spec in parse_header_addresses(value))


def test_subaddress_returns_the_lowercased_detail() -> None:
    assert subaddress("Conduct+42-ABC@Example.ORG", CONDUCT) == "42-abc"
    assert subaddress("<conduct+moderate@example.org>", CONDUCT) == "moderate"


def test_subaddress_is_none_for_the_bare_address_and_strangers() -> None:
    assert subaddress(CONDUCT, CONDUCT) is None
    assert subaddress("conduct+42@example.net", CONDUCT) is None
    assert subaddress("conductor+42@example.org", CONDUCT) is None
    assert subaddress("not an address", CONDUCT) is None


def test_subaddress_compares_idna_domains() -> None:
    assert subaddress("conduct+7@bücher.example", "conduct@xn--bcher-kva.example") == "7"


def test_is_conduct_accepts_the_bare_address_and_any_subaddress() -> None:
    assert is_conduct("CONDUCT@example.org", CONDUCT)
    assert is_conduct("conduct+director@example.org", CONDUCT)
    assert is_conduct("conduct+@example.org", CONDUCT)
    assert not is_conduct("conducts@example.org", CONDUCT)
    assert not is_conduct("conduct@example.net", CONDUCT)
    assert not is_conduct("", CONDUCT)
