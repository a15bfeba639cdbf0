"""Recovers an envelope from headers when mail arrives without SMTP (ingest, import, IMAP)."""

from __future__ import annotations

import email.parser
import email.policy
import functools
import re
from dataclasses import dataclass

from rules.addresses import AddressError, domain_of, parse_header_addresses
from rules.message_keys import split_message

WANTED = frozenset({"return-path", "x-original-to", "delivered-to", "to", "cc"})
# A plain header block is one the stdlib's feed parser reads as fields and nothing else:
# each line a field (a name of printable ASCII without colon, then a colon) or a folded
# continuation (starting with space or tab) of the one above, each CR the start of a CRLF.
_NAME = r"[!-9;-~]+:"
_FIRST_LINE = re.compile(rf"{_NAME}|\Z")
_LONE_CR = re.compile(r"\r(?!\n)")
_NOT_A_FIELD = re.compile(rf"\n(?![ \t]|{_NAME}|\Z)")
# A wanted field of a plain block, after the LF that ends the line above (the scan puts
# one before the first line): its name, and its value with the value's continuation lines.
_WANTED_FIELD = re.compile(
    rf"\n({'|'.join(sorted(WANTED))}):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE
)
# A dot-atom addr-spec (RFC 5322 section 3.4.1), bare or in angle brackets, optionally after
# a display name of plain words: the usual Return-Path, Delivered-To and To. Anything else
# (quoted strings, comments, encoded words, groups, folding) goes to the full parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_MAILBOX = rf"(?:(?:{_ATOM}[ \t]+)*<({_ADDR_SPEC})>|({_ADDR_SPEC}))"
_PLAIN_LIST = re.compile(rf"[ \t]*{_MAILBOX}(?:[ \t]*,[ \t]*{_MAILBOX})*[ \t]*")
_PLAIN_MAILBOX = re.compile(rf"[ \t]*,?[ \t]*{_MAILBOX}")
# A backlog repeats the same few Return-Path and To values, so `header_addresses` caches
# them; only values this short, so that the cache stays small whatever the mail.
_CACHED_VALUE = 256


@dataclass(frozen=True)
class RecoveredEnvelope:
    sender: str | None  # None: no Return-Path, or Return-Path: <> (no acknowledgement)
    recipients: tuple[str, ...]


def scan_fields(header: bytes) -> list[tuple[str, str]] | None:
    """The wanted fields of a plain ASCII header block, as the stdlib parser gives them;
    None for anything else (8-bit bytes, a lone CR, a line that is not a field)."""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    # Three searches that skip to the next CR or LF check the whole block, then one more
    # picks out the wanted fields: cheaper than matching every field in turn, as a block
    # of Received and DKIM fields has dozens. tests/rules/test_envelope.py compares the
    # two on generated blocks.
    if (
        _FIRST_LINE.match(text) is None
        or _LONE_CR.search(text) is not None
        or _NOT_A_FIELD.search(text) is not None
    ):
        return None
    return [(name.lower(), value) for name, value in _WANTED_FIELD.findall("\n" + text)]


def parse_fields(header: bytes) -> list[tuple[str, str]]:
    """The wanted fields by the stdlib parser: the slow path, for what `scan_fields` refuses."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header + b"\r\n\r\n"
    )
    found = [(name.lower(), str(value)) for name, value in parsed.items()]
    return [(name, value) for name, value in found if name in WANTED]


def header_addresses(value: str) -> list[str]:
    """The addr-specs of an address field, as `parse_header_addresses` finds them."""
    if len(value) <= _CACHED_VALUE:
        return list(_cached_addresses(value))
    return _addresses(value)


@functools.lru_cache(maxsize=4096)
def _cached_addresses(value: str) -> tuple[str, ...]:
    return tuple(_addresses(value))


def _addresses(value: str) -> list[str]:
    if _PLAIN_LIST.fullmatch(value) is None:
        return [address for _, address in parse_header_addresses(value)]
    return [a or b for a, b in _PLAIN_MAILBOX.findall(value)]


@functools.lru_cache(maxsize=4096)
def _domain(address: str) -> str | None:
    """The normalised domain, or None; cached: a backlog names the same few domains."""
    try:
        return domain_of(address)
    except AddressError:
        return None


def _first_address(value: str) -> str | None:
    found = header_addresses(value)
    return found[0] if found else None


def recover(raw: bytes, conduct_address: str) -> RecoveredEnvelope:
    """Sender: the Return-Path. Recipients: the topmost X-Original-To, else the topmost
    Delivered-To (both added by the final MTA), else To/Cc addresses at the conduct domain."""
    header, _ = split_message(raw)
    return recover_from_header(header, conduct_address)


def recover_from_header(header: bytes, conduct_address: str) -> RecoveredEnvelope:
    """`recover` for a header block already split off by `split_message`."""
    fields = scan_fields(header)
    if fields is None:
        fields = parse_fields(header)
    sender = None
    for name, value in fields:
        if name == "return-path":
            sender = _first_address(value) or None
            break
    for wanted in ("x-original-to", "delivered-to"):
        for name, value in fields:
            if name == wanted:
                address = _first_address(value)
                if address:
                    return RecoveredEnvelope(sender, (address,))
    conduct_domain = _domain(conduct_address)
    if conduct_domain is None:
        return RecoveredEnvelope(sender, ())
    recipients = [
        address
        for name, value in fields
        if name in ("to", "cc")
        for address in header_addresses(value)
        if _domain(address) == conduct_domain
    ]
    return RecoveredEnvelope(sender, tuple(dict.fromkeys(recipients)))
