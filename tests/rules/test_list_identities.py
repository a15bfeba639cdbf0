"""List posts are checked by every From and Sender address; a bad From is refused with 5.6.0."""

from __future__ import annotations

from rules.list_identities import NO_FROM, Identities, IdentityProblem, identities


def parsed(raw: bytes) -> Identities:
    found = identities(raw)
    assert isinstance(found, Identities), found
    return found


def test_from_and_sender_are_normalised_and_reply_to_is_ignored() -> None:
    found = parsed(
        b"From: Poster <Poster+tag@Example.COM>\r\nSender: list-bot@Example.org\r\n"
        b"Reply-To: other@example.net\r\nTo: dev@lists.example.org\r\n\r\nbody\r\n"
    )
    assert found.from_addresses == ("poster@example.com",)
    assert found.sender_addresses == ("list-bot@example.org",)
    assert "other@example.net" not in found.from_addresses + found.sender_addresses


def test_every_address_of_a_multi_address_from_is_checked() -> None:
    found = parsed(b"From: a@example.com, b@example.net\r\nSender: a@example.com\r\n\r\nx\r\n")
    assert found.from_addresses == ("a@example.com", "b@example.net")


def test_references_are_nearest_first_and_to_cc_collected() -> None:
    found = parsed(
        b"From: a@example.com\r\nTo: T@Example.org\r\nCc: c@example.org\r\n"
        b"In-Reply-To: <p3@x>\r\nReferences: <p1@x> <p2@x> <p3@x>\r\n"
        b"Message-ID: <me@x>\r\n\r\nx\r\n"
    )
    assert found.references == ("p3@x", "p2@x", "p1@x")
    assert found.to_cc == ("t@example.org", "c@example.org")
    assert found.message_id == "me@x"


def test_a_post_without_from_is_refused() -> None:
    problem = identities(b"Subject: hi\r\n\r\nbody\r\n")
    assert problem == IdentityProblem(NO_FROM, "no-from")
    assert NO_FROM.startswith("550 5.6.0")


def test_a_post_with_two_from_fields_is_refused() -> None:
    problem = identities(b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n")
    assert isinstance(problem, IdentityProblem)
    assert problem.reason == "several-from"


def test_an_unparsable_from_is_refused() -> None:
    for value in (b"not an address", b"<>", b"a@", b"@example.com", b'"unterminated'):
        problem = identities(b"From: " + value + b"\r\n\r\nx\r\n")
        assert isinstance(problem, IdentityProblem), value
        assert problem.reply == NO_FROM


def test_garbage_headers_never_raise() -> None:
    for raw in (
        b"",
        b"\x00\xff\xfe",
        b"From:\r\n\r\n",
        b"From: =?utf-8?q?=FF?= <a@b.c>\r\n\r\n",
        b"From: a@example.com\r\n" + b"X: " + b"y" * 100_000 + b"\r\n\r\n",
    ):
        identities(raw)
