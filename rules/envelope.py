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
# One field of a plain header block: a name of printable ASCII without colon (as the
# stdlib's feed parser sees it), its value, and the value's folded continuation lines.
_FIELD = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)(?:\r?\n|\Z)")
# A dot-atom addr-spec (RFC 5322 section 3.4.1), bare or in angle brackets, optionally after
# a display name of plain words: the usual Return-Path, Delivered-To and To. Anything else
# (quoted strings, comments, encoded words, groups, folding) goes to the full parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_MAILBOX = rf"(?:(?:{_ATOM}[ \t]+)*<({_ADDR_SPEC})>|({_ADDR_SPEC}))"
_PLAIN_LIST = re.compile(rf"[ \t]*{_MAILBOX}(?:[ \t]*,[ \t]*{_MAILBOX})*[ \t]*")
_PLAIN_MAILBOX = re.compile(rf"[ \t]*,?[ \t]*{_MAILBOX}")


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
    fields = []
    position = 0
    while position < len(text):
        found = _FIELD.match(text, position)
        if found is None:
            return None
        name = found.group(1).lower()
        if name in WANTED:
            fields.append((name, found.group(2)))
        position = found.end()
    return fields


def parse_fields(header: bytes) -> list[tuple[str, str]]:
    """The wanted fields by the stdlib parser: the slow path, for what `scan_fields` refuses."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header + b"\r\n\r\n"
    )
    found = [(name.lower(), str(value)) for name, value in parsed.items()]
    return [(name, value) for name, value in found if name in WANTED]


def header_addresses(value: str) -> list[str]:
    """The addr-specs of an address field, as `parse_header_addresses` finds them."""
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
