"""The new text of a reply stops at quotes, attributions, Outlook headers and signatures."""

from __future__ import annotations

import pytest

from rules.reply_text import Cut, new_text, split_reply


def test_text_above_a_quoted_line_is_kept_and_the_quote_dropped() -> None:
    body = "Thanks, we are on it.\n\n> the original report\n> more"
    assert new_text(body) == "Thanks, we are on it."


def test_an_indented_quote_also_ends_the_new_text() -> None:
    assert split_reply("New.\n  > old").cut is Cut.QUOTE


def test_crlf_and_bare_cr_are_normalised() -> None:
    assert new_text("One\r\nTwo\rThree\r\n> quoted\r\n") == "One\nTwo\nThree"


def test_a_body_without_quotes_is_kept_whole_but_trailing_blank_lines() -> None:
    split = split_reply("Just text.\nSecond line.\n\n\n")
    assert split.new == "Just text.\nSecond line."
    assert split.cut is None


@pytest.mark.parametrize(
    "attribution",
    [
        "On Mon, Jan 1, 2024 at 10:00 AM Alice Example <alice@example.org> wrote:",
        "On 01/01/2024 10:00, Alice Example wrote:",
        "Am Mo., 1. Jan. 2024 um 10:00 Uhr schrieb Alice Example <alice@example.org>:",
        "Am 01.01.2024 um 10:00 schrieb Alice Example:",
        "Le lun. 1 janv. 2024 à 10:00, Alice Example <alice@example.org> a écrit :",
        "El lun, 1 ene 2024 a las 10:00, Alice Example (<alice@example.org>) escribió:",
        "Op ma 1 jan. 2024 om 10:00 schreef Alice Example <alice@example.org>:",
        "Il giorno lun 1 gen 2024 alle ore 10:00 Alice <alice@example.org> ha scritto:",
        "Em seg., 1 de jan. de 2024 às 10:00, Alice <alice@example.org> escreveu:",
        "Den mån 1 jan. 2024 kl 10:00 skrev Alice Example <alice@example.org>:",
        "Den 01.01.2024 10:00, skrev Alice Example:",
    ],
)
def test_an_attribution_in_each_language_ends_the_new_text(attribution: str) -> None:
    body = f"My answer.\n\n{attribution}\n\n> quoted\n"
    split = split_reply(body)
    assert split.new == "My answer."
    assert split.cut is Cut.ATTRIBUTION


def test_an_attribution_ends_the_new_text_even_without_a_quote_below() -> None:
    body = "My answer.\nOn 2 Jan 2024, at 10:00, Alice <alice@example.org> wrote:\nold text"
    assert new_text(body) == "My answer."


def test_a_bare_name_wrote_line_counts_only_above_a_quote() -> None:
    assert new_text("Answer.\nAlice skrev:\n> old") == "Answer."
    assert new_text("Answer.\nHere is what she wrote:\nit was bad") == (
        "Answer.\nHere is what she wrote:\nit was bad"
    )


def test_an_attribution_wrapped_over_two_lines_is_cut_at_its_first_line() -> None:
    body = (
        "My answer.\n\n"
        "On Mon, Jan 1, 2024 at 10:00 AM Alice Example <\n"
        "alice@example.org> wrote:\n\n> quoted"
    )
    split = split_reply(body)
    assert split.new == "My answer."
    assert split.line == 2


def test_an_attribution_wrapped_before_wrote_is_cut_at_its_first_line() -> None:
    body = "My answer.\nOn 01/01/2024 10:00, Alice Example <alice@example.org>\nwrote:\n> quoted"
    assert new_text(body) == "My answer."


def test_a_finished_sentence_above_an_attribution_is_kept() -> None:
    body = "On 3 May we met.\nOn 01/01/2024 10:00, Alice wrote:\n> quoted"
    assert new_text(body) == "On 3 May we met."


def test_outlook_original_message_separator_ends_the_new_text() -> None:
    body = "Reply.\n\n-----Original Message-----\nFrom: Alice\nold"
    split = split_reply(body)
    assert split.new == "Reply."
    assert split.cut is Cut.ORIGINAL_MESSAGE


def test_localised_original_message_separator_ends_the_new_text() -> None:
    assert new_text("Antwort.\n-----Ursprüngliche Nachricht-----\nVon: Alice") == "Antwort."


def test_outlook_header_block_ends_the_new_text_with_its_rule_line() -> None:
    body = (
        "Reply.\n\n________________________________\n"
        "From: Alice Example <alice@example.org>\n"
        "Sent: Monday, January 1, 2024 10:00 AM\n"
        "To: Conduct <conduct@example.org>\n"
        "Subject: Report\n\nold text"
    )
    split = split_reply(body)
    assert split.new == "Reply."
    assert split.cut is Cut.HEADER_BLOCK


def test_german_outlook_header_block_ends_the_new_text() -> None:
    body = "Antwort.\nVon: Alice\nGesendet: Montag, 1. Januar 2024 10:00\nAn: Conduct\nBetreff: X"
    assert new_text(body) == "Antwort."


def test_html_rendered_bold_outlook_header_block_ends_the_new_text() -> None:
    body = "Reply.\n\n**From:** Alice\n**Date:** Monday\n**To:** Conduct\n"
    assert new_text(body) == "Reply."


def test_a_from_line_without_the_other_headers_is_text() -> None:
    body = "From: the organisers, a statement.\nWe apologise."
    assert new_text(body) == body


def test_signature_separator_with_or_without_the_space_ends_the_new_text() -> None:
    assert new_text("Reply.\n-- \nBob, staff\nbob@example.org") == "Reply."
    assert split_reply("Reply.\n--\nBob").cut is Cut.SIGNATURE


def test_a_dash_line_that_is_not_exactly_the_separator_is_text() -> None:
    assert new_text("Reply.\n-- Bob\nmore") == "Reply.\n-- Bob\nmore"


def test_the_first_cut_wins() -> None:
    body = "Reply.\n-- \nsig\n> quoted"
    assert split_reply(body).cut is Cut.SIGNATURE


def test_a_huge_hostile_body_is_split_at_the_quote() -> None:
    hostile = ("On " + "x" * 5000 + " wrote" * 2000 + "\n") * 200
    body = "Reply.\n" + hostile + ("a " * 100_000) + "\n> quoted"
    split = split_reply(body)
    assert split.cut is Cut.QUOTE
