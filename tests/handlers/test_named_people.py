"""Reports about staff: who a report names, by whole address or full name (SPEC section 5)."""

from __future__ import annotations

import pytest

from gateway.parsing import parse
from handlers.dispatch import Addressing, Incoming, handle
from handlers.effects import AddParticipant, Outcome, SendMail
from handlers.report_intake import named_people
from rules.naming import addresses_in, names
from tests.handlers.builders import ALICE, BOB, ERIN, NOW, message, snapshot

EVERYONE = (ALICE, BOB, ERIN)


def named(**kwargs: object) -> set[str]:
    return {p.address for p in named_people(message(**kwargs), EVERYONE)}  # type: ignore[arg-type]


def run_raw(raw: bytes, sender: str) -> Outcome:
    parsed = parse(raw, sender)
    return handle(Incoming(parsed, Addressing(None, (), None, NOW), snapshot(), NOW))


def recused(outcome: Outcome) -> set[str]:
    return {e.address for e in outcome.effects if isinstance(e, AddParticipant) and e.recused}


def copies(outcome: Outcome) -> set[str]:
    return {e.recipient for e in outcome.effects if isinstance(e, SendMail) and e.kind == "copy"}


def test_a_reporter_writing_from_fred_does_not_name_the_director_ed() -> None:
    raw = (
        b"From: Fred Bloggs <fred@example.org>\r\nTo: conduct@example.org\r\n"
        b"Subject: Rude comments\r\nMessage-ID: <fred1@example.org>\r\n\r\n"
        b"Someone was rude. Write to me at fred@example.org.\r\n"
    )
    outcome = run_raw(raw, "fred@example.org")
    assert recused(outcome) == set()
    assert copies(outcome) == {"alice@example.org", "bob@example.org"}


def test_jimbob_is_not_bob() -> None:
    assert named(text="It was jimbob@example.org who did it.") == set()
    assert named(text="Mail bob@example.org.evil.example about it.") == set()


def test_an_address_inside_a_longer_local_part_is_not_the_address() -> None:
    long_local = "x" * 70 + "bob"
    assert named(text=f"See {long_local}@example.org") == set()


@pytest.mark.parametrize(
    "text",
    [
        "It was bob@example.org who did it.",
        "It was <BOB@Example.ORG>.",
        "mailto:bob+private@example.org said so",
        "(bob@example.org)",
        "bob@example.org.",
    ],
)
def test_a_staff_address_in_the_text_names_them(text: str) -> None:
    assert named(text=text) == {"bob@example.org"}


@pytest.mark.parametrize(
    "text",
    ["Alice Example shouted at me.", "ALICE EXAMPLE shouted", "it was Alice\n  Example, again"],
)
def test_a_full_display_name_names_them_case_insensitively(text: str) -> None:
    assert named(text=text) == {"alice@example.org"}


def test_a_name_only_counts_on_word_boundaries() -> None:
    assert named(text="The Erin Directorate met; Malice Example is a game.") == set()
    assert named(subject="About Erin Director") == {"ed@example.org"}
    assert not names("bob said", "")  # a single word or no name names no one


def test_a_staff_address_in_cc_names_them() -> None:
    raw = (
        b"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\n"
        b"Cc: Someone <Alice+home@Example.org>\r\nSubject: A report\r\n"
        b"Message-ID: <cc1@example.net>\r\n\r\nSomething happened.\r\n"
    )
    outcome = run_raw(raw, "rita@example.net")
    assert recused(outcome) == {"alice@example.org"}
    assert "alice@example.org" not in copies(outcome)


def test_the_reporter_s_own_name_names_no_one_unless_their_address_is_staff() -> None:
    raw = (
        b"From: Alice Example <alice.fan@example.net>\r\nTo: conduct@example.org\r\n"
        b"Subject: A report\r\nMessage-ID: <fan1@example.net>\r\n\r\nSomething happened.\r\n"
    )
    assert recused(run_raw(raw, "alice.fan@example.net")) == set()
    staff_own = raw.replace(b"alice.fan@example.net", b"alice@example.org")
    own = run_raw(staff_own, "alice@example.org")
    # A staff member's own report: they are its reporter, and get no staff copy of it.
    assert copies(own) == {"bob@example.org", "ed@example.org"}
    assert named(sender="alice@example.org", text="Something happened.") == {"alice@example.org"}


def test_addresses_are_found_however_many_word_characters_surround_them() -> None:
    text = "a" * 200_000 + " bob@example.org " + "@" * 1000 + "b" * 200_000
    assert addresses_in(text) == {"bob@example.org"}


@pytest.mark.parametrize(
    "written", ["**alice@example.org**", "_alice@example.org_", "~~alice@example.org~~"]
)
def test_an_address_marked_bold_italic_or_struck_in_rendered_html_names_its_owner(
    written: str,
) -> None:
    assert "alice@example.org" in addresses_in(f"It was {written}, at the meetup.")


def test_an_html_only_report_naming_staff_in_bold_does_not_reach_them() -> None:
    raw = (
        b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
        b"Subject: A report\r\nMessage-ID: <bold1@example.net>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>It was <b>alice@example.org</b> who shouted at me.</p>\r\n"
    )
    assert "alice@example.org" not in copies(run_raw(raw, "rita@example.net"))


def forwarded_as_attachment(enclosed: bytes) -> bytes:
    """Rita's report with `enclosed` attached whole ("forward as attachment")."""
    return (
        b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
        b"Subject: Please look at this\r\nMessage-ID: <att1@example.net>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n"
        b"I received the attached message. It made me feel unsafe at events.\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n"
        b'Content-Disposition: attachment; filename="msg.eml"\r\n\r\n' + enclosed + b"\r\n"
        b"--b--\r\n"
    )


@pytest.mark.parametrize(
    "enclosed",
    [
        pytest.param(
            b"From: Alice Example <alice@example.org>\r\nTo: rita@example.net\r\n"
            b"Subject: you\r\n\r\nYou will regret reporting anything.\r\n",
            id="its-from",
        ),
        pytest.param(
            b"From: someone@example.com\r\nTo: rita@example.net\r\n"
            b"Cc: =?utf-8?q?A?= <Alice+lists@Example.org>\r\nSubject: you\r\n\r\nNothing.\r\n",
            id="its-cc",
        ),
        pytest.param(
            b"From: someone@example.com\r\nSender: alice@example.org\r\n"
            b"To: rita@example.net\r\nSubject: you\r\n\r\nNothing.\r\n",
            id="its-sender",
        ),
        pytest.param(
            b"From: someone@example.com\r\nReply-To: alice@example.org\r\n"
            b"To: rita@example.net\r\nSubject: you\r\n\r\nNothing.\r\n",
            id="its-reply-to",
        ),
        pytest.param(
            b"From: someone@example.com\r\nTo: rita@example.net\r\nSubject: you\r\n\r\n"
            b"Alice Example told me to write this.\r\n",
            id="its-text",
        ),
        pytest.param(
            b"From: someone@example.com\r\nTo: rita@example.net\r\nSubject: you\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
            b'<p>Ask <a href="mailto:alice@example.org">her</a> about it.</p>\r\n',
            id="its-html-text",
        ),
        pytest.param(
            b"From: someone@example.com\r\nTo: rita@example.net\r\nSubject: fwd\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="c"\r\n\r\n'
            b"--c\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
            b"--c\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: Alice Example <alice@example.org>\r\nSubject: x\r\n\r\nHi.\r\n"
            b"--c--\r\n",
            id="nested",
        ),
    ],
)
def test_a_staff_member_named_only_in_an_attached_message_does_not_get_the_report(
    enclosed: bytes,
) -> None:
    """SPEC section 5: a forwarded-as-attachment message is part of the report, so the
    addresses and text of the message it attaches name people as its own do."""
    outcome = run_raw(forwarded_as_attachment(enclosed), "rita@example.net")
    assert recused(outcome) == {"alice@example.org"}
    assert copies(outcome) == {"bob@example.org", "ed@example.org"}


def test_an_attached_message_naming_no_staff_changes_nothing() -> None:
    enclosed = (
        b"From: Mallory <mallory@example.com>\r\nTo: rita@example.net\r\n"
        b"Subject: you\r\n\r\nYou will regret reporting anything.\r\n"
    )
    outcome = run_raw(forwarded_as_attachment(enclosed), "rita@example.net")
    assert recused(outcome) == set()
    assert copies(outcome) == {"alice@example.org", "bob@example.org", "ed@example.org"}
