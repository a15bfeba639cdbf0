"""Recovers an envelope from headers when mail arrives without SMTP (ingest, import, IMAP)."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass

from rules.addresses import AddressError, domain_of, parse_header_addresses
from rules.message_keys import split_message


@dataclass(frozen=True)
class RecoveredEnvelope:
    sender: str | None  # None: no Return-Path, or Return-Path: <> (no acknowledgement)
    recipients: tuple[str, ...]


def _fields(raw: bytes) -> list[tuple[str, str]]:
    header, _ = split_message(raw)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header + b"\r\n\r\n"
    )
    return [(name.lower(), str(value)) for name, value in parsed.items()]


def _first_address(value: str) -> str | None:
    found = parse_header_addresses(value)
    return found[0][1] if found else None


def recover(raw: bytes, conduct_address: str) -> RecoveredEnvelope:
    """Sender: the Return-Path. Recipients: the topmost X-Original-To, else the topmost
    Delivered-To (both added by the final MTA), else To/Cc addresses at the conduct domain."""
    fields = _fields(raw)
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
    try:
        conduct_domain = domain_of(conduct_address)
    except AddressError:
        return RecoveredEnvelope(sender, ())
    recipients = []
    for name, value in fields:
        if name in ("to", "cc"):
            for _, address in parse_header_addresses(value):
                try:
                    if domain_of(address) == conduct_domain:
                        recipients.append(address)
                except AddressError:
                    continue
    return RecoveredEnvelope(sender, tuple(dict.fromkeys(recipients)))
