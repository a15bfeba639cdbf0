"""The identities a list post is checked by: every From and Sender address (SPEC section 6)."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass

from rules.addresses import AddressError, normalise
from rules.message_keys import split_message

# RFC 5322 section 3.6: exactly one From field; a list post without a usable From
# cannot be checked against header bans, so it is refused rather than relayed.
NO_FROM = "550 5.6.0 A list post needs exactly one From field with a valid address"


@dataclass(frozen=True)
class Identities:
    """Normalised addresses by where they were found; Reply-To is never one of them."""

    from_addresses: tuple[str, ...]
    sender_addresses: tuple[str, ...]
    message_id: str | None
    references: tuple[str, ...]
    to_cc: tuple[str, ...]


@dataclass(frozen=True)
class IdentityProblem:
    reply: str
    reason: str


def _parse_headers(raw: bytes) -> email.message.EmailMessage:
    header, _ = split_message(raw)
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    message = parser.parsebytes(header + b"\r\n\r\n")
    assert isinstance(message, email.message.EmailMessage)
    return message


def _addresses(message: email.message.EmailMessage, name: str) -> tuple[str, ...] | None:
    """Normalised addresses of every `name` field; None when one does not parse."""
    found: list[str] = []
    for value in message.get_all(name, []):
        try:
            addresses = getattr(value, "addresses", ())
            specs = [item.addr_spec for item in addresses]
        except (IndexError, ValueError, TypeError):
            return None
        if not specs or any(not spec or spec == "<>" for spec in specs):
            return None
        try:
            found.extend(normalise(spec) for spec in specs)
        except AddressError:
            return None
    return tuple(dict.fromkeys(found))


def _ids(message: email.message.EmailMessage, name: str) -> list[str]:
    ids: list[str] = []
    for value in message.get_all(name, []):
        for word in str(value).replace(">", "> ").split():
            word = word.strip()
            if word.startswith("<") and word.endswith(">") and len(word) > 2:
                ids.append(word[1:-1])
    return ids


def identities(raw: bytes) -> Identities | IdentityProblem:
    try:
        message = _parse_headers(raw)
        from_fields = message.get_all("From", [])
    except (IndexError, ValueError, TypeError):
        return IdentityProblem(NO_FROM, "unparsable-header")
    if len(from_fields) != 1:
        return IdentityProblem(NO_FROM, "no-from" if not from_fields else "several-from")
    from_addresses = _addresses(message, "From")
    sender_addresses = _addresses(message, "Sender")
    if not from_addresses:
        return IdentityProblem(NO_FROM, "unparsable-from")
    to_cc = (_addresses(message, "To") or ()) + (_addresses(message, "Cc") or ())
    message_ids = _ids(message, "Message-ID")
    references = _ids(message, "In-Reply-To") + _ids(message, "References")[::-1]
    return Identities(
        from_addresses=from_addresses,
        sender_addresses=sender_addresses or (),
        message_id=message_ids[0] if message_ids else None,
        references=tuple(dict.fromkeys(references)),
        to_cc=tuple(dict.fromkeys(to_cc)),
    )
