"""Envelope recovery: the fast header scan gives what the stdlib parser gave, on ugly mail too."""

from __future__ import annotations

import email.parser
import email.policy
import random
from pathlib import Path

import pytest

from rules.addresses import AddressError, domain_of, parse_header_addresses
from rules.envelope import (
    RecoveredEnvelope,
    header_addresses,
    parse_fields,
    recover,
    scan_fields,
)
from rules.line_endings import normalise_line_endings
from rules.message_keys import split_message

CONDUCT = "conduct@example.org"
CORPUS = sorted((Path(__file__).parent.parent / "data").glob("*.eml"))
BODY = b"\r\nThe body.\r\n"

# Header blocks that go wrong in help desks: folding, encoded words, comments, groups,
# quoted local parts, 8-bit bytes, lone CRs, garbage lines, mbox "From " lines.
UGLY_HEADERS = [
    b"Return-Path: <rita@example.net>\r\nTo: conduct@example.org",
    b"Return-Path: <>\r\nTo: Conduct Team <conduct@example.org>, other@example.net",
    b"Return-Path:\r\n <rita@example.net>\r\nTo: conduct@example.org",
    b"return-path: rita@example.net (Rita)\r\nTO: =?utf-8?q?Conduct?= <conduct@example.org>",
    b"Return-Path: <prvs=123=rita@example.net>\r\nX-Original-To: conduct+42@example.org",
    b"Delivered-To: conduct+7@example.org\r\nX-Original-To: conduct+director@example.org",
    b"Delivered-To: other@example.net\r\nDelivered-To: conduct+1@example.org",
    b"X-Original-To: <>\r\nDelivered-To: conduct@example.org",
    b'To: "Conduct, Team" <conduct@example.org>, "x y"@example.org, \r\n\tcc@example.org',
    b"To: undisclosed-recipients:;\r\nCc: Team: conduct@example.org, a@example.org;",
    b"To: J. Doe <conduct+3@example.org>\r\nCc: <conduct+4@EXAMPLE.org> (comment)",
    b"To: conduct@example.org,,, ,conduct+9@example.org",
    b"To: Conduct<conduct@example.org>\r\nCc: conduct@[127.0.0.1], a@b@example.org",
    b"To: conduct@example.org.\r\nCc: .conduct@example.org, conduct..x@example.org",
    b"To: <conduct@example.org\r\nCc: conduct@example.org>, <<conduct@example.org>>",
    b"To: =?iso-8859-1?q?Ren=E9?= <conduct@example.org>\r\nCc: =?garbage?= <a@example.org>",
    b"To: R\xc3\xa9n\xc3\xa9 <conduct@example.org>\r\nReturn-Path: <r\xe9@example.net>",
    b"Return-Path: <rita@example.net>\r\nTo: conduct@example.org\rCc: conduct+2@example.org",
    b"From rita@example.net Mon Jan  1 00:00:00 2026\r\nTo: conduct@example.org",
    b"Received: by mx\r\nnot a header line\r\nTo: conduct@example.org",
    b" leading continuation\r\nTo: conduct@example.org",
    b": empty name\r\nTo: conduct@example.org",
    b"To : conduct@example.org\r\nCc:conduct+5@example.org",
    b"To:\r\nReturn-Path: \r\nDelivered-To:   ",
    b"To: conduct@example.org\nCc: conduct+6@example.org\n\tconduct+7@example.org",
    b"To: \x00conduct@example.org\r\nCc: conduct@\x7fexample.org",
    b"To: conduct@example.org" + b"\r\n x" * 300,
    b"To: " + b", ".join(b"u%d@example.org" % n for n in range(500)),
    b"",
]


def _old_recover(raw: bytes, conduct_address: str) -> RecoveredEnvelope:
    """`recover` as it was before the fast scan: every field through the stdlib parser and
    every address through the email header registry. The reference for equivalence."""
    header, _ = split_message(raw)
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header + b"\r\n\r\n"
    )
    fields = [(name.lower(), str(value)) for name, value in parsed.items()]

    def first(value: str) -> str | None:
        found = parse_header_addresses(value)
        return found[0][1] if found else None

    sender = next((first(v) or None for n, v in fields if n == "return-path"), None)
    for wanted in ("x-original-to", "delivered-to"):
        for name, value in fields:
            address = first(value) if name == wanted else None
            if address:
                return RecoveredEnvelope(sender, (address,))
    recipients = []
    for name, value in fields:
        for _, address in parse_header_addresses(value) if name in ("to", "cc") else []:
            try:
                if domain_of(address) == domain_of(conduct_address):
                    recipients.append(address)
            except AddressError:
                continue
    return RecoveredEnvelope(sender, tuple(dict.fromkeys(recipients)))


def _messages() -> list[bytes]:
    found = [path.read_bytes() for path in CORPUS]
    found += [header + b"\r\n" + BODY for header in UGLY_HEADERS]
    found += [raw.replace(b"\r\n", b"\n") for raw in found]
    return found + [normalise_line_endings(raw) for raw in found]


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("raw", _messages())
def test_recover_gives_what_the_stdlib_parser_gave(raw: bytes) -> None:
    assert recover(raw, CONDUCT) == _old_recover(raw, CONDUCT)


@pytest.mark.parametrize("raw", _messages())
def test_the_scan_reads_plain_headers_as_the_stdlib_parser_does(raw: bytes) -> None:
    header, _ = split_message(raw)
    scanned = scan_fields(header)
    assert scanned is None or scanned == parse_fields(header)


def test_the_scan_takes_plain_headers_and_leaves_the_rest() -> None:
    plain = b"Received: by mx\r\n\tid 1\r\nReturn-Path: <r@example.net>\r\nTO:  a@example.org"
    assert scan_fields(plain) == [("return-path", "<r@example.net>"), ("to", "a@example.org")]
    for refused in (b"To: R\xc3\xa9 <a@b>", b"To: a@b\rCc: c@d", b"junk\r\nTo: a@b", b" x"):
        assert scan_fields(refused) is None


def test_plain_and_ugly_recipients_are_recovered() -> None:
    raw = (
        b"Return-Path: <rita@example.net>\r\n"
        b'To: "Team, Conduct" <conduct+42@example.org>, Bob <bob@example.net>\r\n'
        b"Cc: conduct+42@EXAMPLE.org, =?utf-8?q?R=C3=A9?= <conduct@example.org>\r\n" + BODY
    )
    assert recover(raw, CONDUCT) == RecoveredEnvelope(
        "rita@example.net", ("conduct+42@example.org", "conduct+42@EXAMPLE.org", CONDUCT)
    )
    bounce = b"Return-Path: <>\r\nDelivered-To: conduct+bounce-x@example.org\r\n" + BODY
    assert recover(bounce, CONDUCT) == RecoveredEnvelope(None, ("conduct+bounce-x@example.org",))


def _random_field(rng: random.Random) -> str:
    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    tricky = ' ."(),:;<>@[]\\\t'

    def word(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))

    def address() -> str:
        parts = [word(atext) for _ in range(rng.randint(1, 3))]
        domain = [word(atext) for _ in range(rng.randint(1, 3))]
        text = ".".join(parts) + "@" + ".".join(domain)
        if rng.random() < 0.5:
            text = f"<{text}>"
        if rng.random() < 0.3:
            text = " ".join(word(atext + tricky[:2]) for _ in range(rng.randint(1, 3))) + text
        return text

    separators = [",", ", ", " ,", ",,", " , \t"]
    return rng.choice(separators).join(address() for _ in range(rng.randint(1, 3)))


def test_plain_address_lists_give_what_the_header_registry_gives() -> None:
    rng = random.Random(6)
    plain = 0
    for _ in range(4000):
        value = _random_field(rng)
        expected = [address for _, address in parse_header_addresses(value)]
        assert header_addresses(value) == expected, value
        plain += bool(expected)
    assert plain > 1000  # the generator does make addresses the fast path takes
