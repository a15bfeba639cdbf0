"""The identities a list post is checked by: every From and Sender address (SPEC section 6)."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass

from rules.addresses import AddressError, normalise
from rules.message_keys import split_message

# RFC 5322 section 3.6: exactly one From field; a list post without a usable From
# cannot be checked against header bans, so it is refused rather than relayed.
_SPACED_NAME = re.compile(r"^(?P<name>[\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
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


def _parse_headers(raw: bytes) -> email.message.Message:
    # compat32 and getaddresses: the addresses are all a list post is checked by, and the
    # modern header registry costs most of a relayed post's time (measured in bench/).
    header, _ = split_message(raw)
    # RFC 6532: UTF-8 header fields are text to check, not bytes to give up on.
    text = header.decode("utf-8", "surrogateescape")
    # RFC 5322 section 4.5.3 (obs-optional): a field name may be followed by white space
    # before its colon. compat32 would not see `From : x` as a From field at all, so a
    # banned address there would escape the From check.
    text = _SPACED_NAME.sub(r"\g<name>:", text)
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text + "\r\n\r\n")


def _addresses(message: email.message.Message, name: str) -> tuple[str, ...] | None:
    """Normalised addresses of every `name` field; None when one does not parse."""
    found: list[str] = []
    for value in message.get_all(name, []):
        pairs = email.utils.getaddresses([str(value)])
        if not pairs or any(not spec or spec == "<>" for _, spec in pairs):
            return None
        try:
            found.extend(normalise(spec) for _, spec in pairs)
        except AddressError:
            return None
    return tuple(dict.fromkeys(found))


def _ids(message: email.message.Message, name: str) -> list[str]:
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
