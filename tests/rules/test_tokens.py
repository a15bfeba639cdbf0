"""Signed reply addresses, random tokens and the conduct subaddress grammar."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from rules import tokens
from rules.errors import GatewayError
from rules.tokens import (
    Bounce,
    Case,
    Confirm,
    Director,
    Moderate,
    Signed,
    TokenInputError,
    Unknown,
    format_detail,
    new_bounce_id,
    new_confirm_token,
    new_message_id,
    parse_detail,
    reply_token,
    secret_fingerprint,
    signed_address,
    subaddress_for,
    verify_token,
)

SECRET = bytes(range(32))
PREVIOUS = b"the secret before the rotation.."
BASE32_LOWER = re.compile(r"[a-z2-7]+")


def spec_token(secret: bytes, case: int, recipient: str) -> str:
    """SPEC section 3, written out independently of the module."""
    mac = hmac.new(secret, f"{case}:{recipient.lower()}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode().lower()[:20]


def test_reply_token_follows_the_spec_formula() -> None:
    assert reply_token(SECRET, 42, "alice@example.org") == spec_token(
        SECRET, 42, "alice@example.org"
    )


def test_reply_token_is_twenty_lower_case_base32_characters() -> None:
    token = reply_token(SECRET, 42, "alice@example.org")
    assert len(token) == 20
    assert BASE32_LOWER.fullmatch(token)


def test_reply_token_lower_cases_the_recipient() -> None:
    assert reply_token(SECRET, 7, "Alice@Example.ORG") == reply_token(
        SECRET, 7, "alice@example.org"
    )


def test_reply_token_differs_by_case_recipient_and_secret() -> None:
    base = reply_token(SECRET, 42, "alice@example.org")
    assert reply_token(SECRET, 43, "alice@example.org") != base
    assert reply_token(SECRET, 42, "bob@example.org") != base
    assert reply_token(PREVIOUS, 42, "alice@example.org") != base


def test_reply_token_refuses_an_empty_secret_and_case_zero() -> None:
    with pytest.raises(TokenInputError):
        reply_token(b"", 42, "alice@example.org")
    with pytest.raises(GatewayError):
        reply_token(SECRET, 0, "alice@example.org")


def test_signed_address_puts_case_and_token_after_the_delimiter() -> None:
    assert (
        signed_address("conduct@example.org", 42, "abcdefghijklmnopqrst")
        == "conduct+42-abcdefghijklmnopqrst@example.org"
    )


def test_verify_token_accepts_the_current_secret() -> None:
    token = spec_token(SECRET, 42, "alice@example.org")
    assert verify_token([SECRET], 42, "alice@example.org", token)


def test_verify_token_accepts_a_token_of_the_previous_secret_during_rotation() -> None:
    token = spec_token(PREVIOUS, 42, "alice@example.org")
    assert verify_token([SECRET, PREVIOUS], 42, "alice@example.org", token)
    assert not verify_token([SECRET], 42, "alice@example.org", token)


def test_verify_token_is_case_insensitive_about_the_token_and_recipient() -> None:
    token = spec_token(SECRET, 42, "alice@example.org")
    assert verify_token([SECRET], 42, "ALICE@example.org", token.upper())


def test_verify_token_refuses_another_case_recipient_or_a_damaged_token() -> None:
    token = spec_token(SECRET, 42, "alice@example.org")
    assert not verify_token([SECRET], 43, "alice@example.org", token)
    assert not verify_token([SECRET], 42, "mallory@example.org", token)
    assert not verify_token([SECRET], 42, "alice@example.org", token[:-1])
    assert not verify_token([SECRET], 42, "alice@example.org", token + "a")
    assert not verify_token([SECRET], 42, "alice@example.org", "")
    assert not verify_token([SECRET], 0, "alice@example.org", token)


def test_verify_token_survives_non_ascii_input() -> None:
    assert not verify_token([SECRET], 42, "alice@example.org", "jörg\udcff")


def test_verify_token_ignores_an_empty_secret() -> None:
    forged = base64.b32encode(
        hmac.new(b"", b"42:alice@example.org", hashlib.sha256).digest()
    ).decode()[:20]
    assert not verify_token([b""], 42, "alice@example.org", forged.lower())


def test_verify_token_compares_in_constant_time_with_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("rules.tokens.hmac.compare_digest", spy)
    token = spec_token(SECRET, 42, "alice@example.org")
    assert verify_token([SECRET, PREVIOUS], 42, "alice@example.org", token)
    # The previous secret is tried even after the current one matched.
    assert len(calls) == 2


def test_random_tokens_are_160_bit_lower_case_base32_without_padding() -> None:
    for make in (new_confirm_token, new_bounce_id):
        value = make()
        assert len(value) == 32
        assert BASE32_LOWER.fullmatch(value)


def test_random_tokens_do_not_repeat() -> None:
    assert len({new_confirm_token() for _ in range(100)}) == 100
    assert len({new_bounce_id() for _ in range(100)}) == 100


def test_new_message_id_has_random_left_side_and_no_angle_brackets() -> None:
    message_id = new_message_id("Example.ORG")
    left, _at, right = message_id.partition("@")
    assert right == "example.org"
    assert BASE32_LOWER.fullmatch(left)
    assert len(left) * 5 >= 128
    assert "<" not in message_id
    assert new_message_id("example.org") != new_message_id("example.org")


@pytest.mark.parametrize("domain", ["", "exa mple.org", "<example.org>", "a@b"])
def test_new_message_id_refuses_a_domain_that_would_break_the_header(domain: str) -> None:
    with pytest.raises(TokenInputError):
        new_message_id(domain)


def test_secret_fingerprint_is_stable_and_not_the_plain_hash_of_the_secret() -> None:
    fingerprint = secret_fingerprint(SECRET)
    assert fingerprint == secret_fingerprint(bytes(range(32)))
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert fingerprint != hashlib.sha256(SECRET).hexdigest()
    assert fingerprint != secret_fingerprint(PREVIOUS)


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("42", Case(42)),
        ("1", Case(1)),
        ("999999999", Case(999999999)),
        ("42-abcdefghijklmnopqrst", Signed(42, "abcdefghijklmnopqrst")),
        ("42-ABCDEFGHIJKLMNOPQRST", Signed(42, "abcdefghijklmnopqrst")),
        ("42-short", Signed(42, "short")),
        ("moderate", Moderate()),
        ("MODERATE", Moderate()),
        ("director", Director()),
        ("Director", Director()),
        ("confirm-abc234", Confirm("abc234")),
        ("CONFIRM-ABC234", Confirm("abc234")),
        ("bounce-xyz777", Bounce("xyz777")),
    ],
)
def test_parse_detail_recognises_each_conduct_address(detail: str, expected: object) -> None:
    assert parse_detail(detail) == expected


@pytest.mark.parametrize(
    "detail",
    [
        "",
        "042",
        "0",
        "+42",
        "-42",
        "1234567890",
        "42-",
        "42-tok-en",
        "42-" + "a" * 65,
        "confirm-",
        "confirm-" + "a" * 65,
        "bounce-",
        "bounce-a.b",
        "moderator",
        "foo",
        "٤٢",
        "x" * 200,
    ],
)
def test_parse_detail_calls_anything_else_unknown_and_keeps_it(detail: str) -> None:
    assert parse_detail(detail) == Unknown(detail)


@pytest.mark.parametrize(
    "detail",
    [Case(42), Signed(42, "tok"), Moderate(), Confirm("c"), Director(), Bounce("b"), Unknown("x")],
)
def test_format_detail_inverts_parse_detail(detail: tokens.Detail) -> None:
    assert parse_detail(format_detail(detail)) == detail


def test_subaddress_for_builds_function_addresses() -> None:
    assert subaddress_for("conduct@example.org", Confirm("abc")) == (
        "conduct+confirm-abc@example.org"
    )
    assert subaddress_for("conduct@example.org", Bounce("id")) == "conduct+bounce-id@example.org"
    with pytest.raises(TokenInputError):
        subaddress_for("conduct", Moderate())
