"""Envelope recovery: the fast header scan gives what the stdlib parser gave, on ugly mail too."""

from __future__ import annotations

import email.parser
import email.policy
import random
import re
from pathlib import Path

import pytest

from rules.addresses import AddressError, domain_of, parse_header_addresses
from rules.envelope import (
    WANTED,
    RecoveredEnvelope,
    header_addresses,
    parse_fields,
    recover,
    recover_from_header,
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


_OLD_FIELD = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)(?:\r?\n|\Z)")


def _old_scan_fields(header: bytes) -> list[tuple[str, str]] | None:
    """`scan_fields` as it was before the block checks: one regex match per field."""
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    fields = []
    position = 0
    while position < len(text):
        found = _OLD_FIELD.match(text, position)
        if found is None:
            return None
        name = found.group(1).lower()
        if name in WANTED:
            fields.append((name, found.group(2)))
        position = found.end()
    return fields


# Lines for generated header blocks: wanted and other fields in any case, folding, empty
# values, names the stdlib would not take, junk lines, 8-bit bytes and control characters.
SCAN_LINES = [
    "Return-Path: <rita@example.net>",
    "return-path:<>",
    "To: conduct@example.org",
    "TO:\tConduct <conduct+1@example.org>,",
    "cC: a@example.org",
    "Delivered-To: conduct+2@example.org",
    "X-Original-To:",
    "x-original-to: conduct+3@example.org ",
    "Received: from mx (mx [192.0.2.1])",
    "Tox: not-to@example.org",
    "X-To: not-to@example.org",
    "Subject: To: conduct@example.org",
    "DKIM-Signature: v=1; a=rsa-sha256; b=abc",
    " folded continuation",
    "\tanother@example.org",
    " ",
    "",
    "To : space before colon",
    ": empty name",
    "not a field",
    "From rita@example.net Mon Jan  1 00:00:00 2026",
    "To: caf\xe9@example.org",
    "To: \x00nul\x0bvt\x0cff\x1cfs@example.org",
    "Cc: \x85next-line@example.org",
]
SCAN_ENDS = ["\r\n", "\r\n", "\r\n", "\n", "\r", "\r\r\n", ""]


def _generated_header_blocks(count: int) -> list[bytes]:
    rng = random.Random(9)
    blocks = []
    for _ in range(count):
        lines = [rng.choice(SCAN_LINES) for _ in range(rng.randint(0, 7))]
        text = "".join(line + rng.choice(SCAN_ENDS) for line in lines)
        if rng.random() < 0.5:  # most real blocks end without a line end
            text = text.rstrip("\r\n")
        blocks.append(text.encode("latin-1"))
    return blocks


def test_the_scan_gives_what_the_field_by_field_scan_gave() -> None:
    blocks = [split_message(raw)[0] for raw in _messages()] + [
        header.encode("latin-1") for header in SCAN_LINES
    ]
    for header in blocks + _generated_header_blocks(20_000):
        assert scan_fields(header) == _old_scan_fields(header), header


def test_the_generated_blocks_reach_both_paths() -> None:
    scanned = [scan_fields(header) for header in _generated_header_blocks(20_000)]
    assert sum(fields is None for fields in scanned) > 2000
    assert sum(bool(fields) for fields in scanned) > 2000


@pytest.mark.parametrize("raw", _messages())
def test_recover_from_header_gives_what_recover_gives(raw: bytes) -> None:
    header, _ = split_message(raw)
    assert recover_from_header(header, CONDUCT) == recover(raw, CONDUCT)


def test_cached_addresses_are_a_fresh_list_each_time() -> None:
    value = "Rita <rita@example.net>, conduct@example.org"
    first = header_addresses(value)
    first.append("changed@example.net")
    assert header_addresses(value) == ["rita@example.net", "conduct@example.org"]


def test_a_long_address_list_is_read_as_a_short_one() -> None:
    value = ", ".join(f"u{n}@example.org" for n in range(100))
    assert len(value) > 1000
    expected = [address for _, address in parse_header_addresses(value)]
    assert header_addresses(value) == expected == [f"u{n}@example.org" for n in range(100)]
