"""Signed reply addresses, random tokens and the conduct subaddress grammar (SPEC section 3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from secrets import token_bytes

from rules.errors import GatewayError

DELIMITER = "+"
TOKEN_LENGTH = 20
# 160 bits: above the SPEC's 128-bit floor, and exactly 32 base32 characters, so no padding.
_RANDOM_BYTES = 20
# A fixed label keeps the fingerprint apart from every reply-token MAC, whose messages all
# start with a digit. Changing it invalidates the fingerprints stored in databases.
_FINGERPRINT_LABEL = b"conduct-gateway secret fingerprint v1"

# Case numbers start at 1; 9 digits keep them well inside a database integer.
_NUMBER = r"[1-9][0-9]{0,8}"
# Tokens are parsed loosely (any letters and digits, bounded) so that a damaged signed
# address still names its case; verify_token alone decides whether a token is good.
_LOOSE_WORD = r"[a-z0-9]{1,64}"
_MAX_DETAIL = 128
_CASE = re.compile(_NUMBER, re.ASCII)
_SIGNED = re.compile(rf"({_NUMBER})-({_LOOSE_WORD})", re.ASCII)
_CONFIRM = re.compile(rf"confirm-({_LOOSE_WORD})", re.ASCII)
_BOUNCE = re.compile(rf"bounce-({_LOOSE_WORD})", re.ASCII)
_DOMAIN = re.compile(r"[a-z0-9.-]{1,253}|\[[^\]\s<>@]{1,253}\]", re.ASCII)


class TokenInputError(GatewayError):
    """A caller asked for a token or address that cannot be made safely."""

    def __init__(self, what: str, value: object) -> None:
        super().__init__(f"cannot make a token or address: {what} ({value!r})")
        self.what = what


@dataclass(frozen=True)
class Case:
    """`conduct+42@`: correspondence on case 42."""

    number: int


@dataclass(frozen=True)
class Signed:
    """`conduct+42-TOKEN@`: one participant's reply address; the token is not yet verified."""

    number: int
    token: str


@dataclass(frozen=True)
class Moderate:
    """`conduct+moderate@`: commands that need a confirmation round-trip."""


@dataclass(frozen=True)
class Confirm:
    """`conduct+confirm-TOKEN@`: confirms pending commands."""

    token: str


@dataclass(frozen=True)
class Director:
    """`conduct+director@`: reaches the executive director alone."""


@dataclass(frozen=True)
class Bounce:
    """`conduct+bounce-ID@`: the envelope sender of one outbound mail."""

    bounce_id: str


@dataclass(frozen=True)
class Unknown:
    """Any other detail; handled as mail to the bare conduct address."""

    detail: str


Detail = Case | Signed | Moderate | Confirm | Director | Bounce | Unknown


def _mac(secret: bytes, case: int, recipient: str) -> bytes:
    message = f"{case}:{recipient.lower()}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def reply_token(secret: bytes, case: int, recipient_normalised: str) -> str:
    """First 20 characters of base32(HMAC-SHA256(secret, "42:" + recipient)), lower case."""
    if not secret:
        raise TokenInputError("an empty secret signs nothing", secret)
    if case < 1:
        raise TokenInputError("case numbers start at 1", case)
    return _base32(_mac(secret, case, recipient_normalised))[:TOKEN_LENGTH]


def verify_token(secrets: Sequence[bytes], case: int, recipient: str, token: str) -> bool:
    """Whether `token` was made for this case and recipient by any of `secrets` (rotation).

    Every secret is tried, and each comparison is constant-time, so the answer's timing
    says neither how much of a guess was right nor which secret made it.
    """
    if case < 1:
        return False
    offered = token.lower().encode("utf-8", "surrogateescape")
    valid = False
    for secret in secrets:
        if not secret:
            continue
        expected = _base32(_mac(secret, case, recipient))[:TOKEN_LENGTH].encode("ascii")
        valid |= hmac.compare_digest(expected, offered)
    return valid


def new_confirm_token() -> str:
    """A single-use confirmation token: 160 random bits as 32 characters of [a-z2-7]."""
    return _base32(token_bytes(_RANDOM_BYTES))


def new_bounce_id() -> str:
    """An outbound mail's bounce ID: 160 random bits as 32 characters of [a-z2-7]."""
    return _base32(token_bytes(_RANDOM_BYTES))


def new_message_id(domain: str) -> str:
    """`RANDOM@domain` with 160 random bits, without angle brackets."""
    host = domain.strip().lower()
    if not _DOMAIN.fullmatch(host):
        raise TokenInputError("not a Message-ID domain", domain)
    return f"{_base32(token_bytes(_RANDOM_BYTES))}@{host}"


def secret_fingerprint(secret: bytes) -> str:
    """A stable, non-reversible identifier of a secret, for storing beside the data it signs."""
    return hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def parse_detail(detail: str) -> Detail:
    """The meaning of the text after `conduct+`; case-insensitive, never raises."""
    if len(detail) > _MAX_DETAIL or not detail.isascii():
        return Unknown(detail)
    text = detail.lower()
    if text == "moderate":
        return Moderate()
    if text == "director":
        return Director()
    if _CASE.fullmatch(text):
        return Case(int(text))
    if signed := _SIGNED.fullmatch(text):
        return Signed(int(signed.group(1)), signed.group(2))
    if confirm := _CONFIRM.fullmatch(text):
        return Confirm(confirm.group(1))
    if bounce := _BOUNCE.fullmatch(text):
        return Bounce(bounce.group(1))
    return Unknown(detail)


def format_detail(detail: Detail) -> str:
    """The inverse of parse_detail: the text that goes after `conduct+`."""
    match detail:
        case Case(number):
            return str(number)
        case Signed(number, token):
            return f"{number}-{token}"
        case Moderate():
            return "moderate"
        case Confirm(token):
            return f"confirm-{token}"
        case Director():
            return "director"
        case Bounce(bounce_id):
            return f"bounce-{bounce_id}"
        case Unknown(text):
            return text


def subaddress_for(conduct_address: str, detail: Detail) -> str:
    """`conduct@example.org` + Confirm("abc") -> `conduct+confirm-abc@example.org`."""
    local, at, domain = conduct_address.strip().rpartition("@")
    if not at or not local or not domain:
        raise TokenInputError("the conduct address is not local@domain", conduct_address)
    return f"{local}{DELIMITER}{format_detail(detail)}@{domain}"


def signed_address(conduct_address: str, case: int, token: str) -> str:
    """`conduct+42-TOKEN@example.org`: a participant's reply address."""
    return subaddress_for(conduct_address, Signed(case, token))
