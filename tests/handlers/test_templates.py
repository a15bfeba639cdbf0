"""Every text the gateway writes follows the response procedure's wording rules."""

from __future__ import annotations

import re

import pytest

from handlers import templates

# Procedure: never invite withdrawing, never ask the reporter's advice on handling,
# never offer input into penalties.
FORBIDDEN = [
    r"withdraw",
    r"retract",
    r"drop (the|your) (complaint|report)",
    r"how (should|would you like) (we|us to) (handle|deal)",
    r"your advice",
    r"penalt",
    r"punish",
    r"what (sanction|consequence)",
]


@pytest.mark.parametrize("name", sorted(templates.TEMPLATES))
def test_no_template_invites_withdrawal_or_asks_for_penalty_input(name: str) -> None:
    text = templates.TEMPLATES[name].lower()
    for pattern in FORBIDDEN:
        assert not re.search(pattern, text), f"{name} matches {pattern!r}"


def test_the_acknowledgement_says_what_the_procedure_requires() -> None:
    text = templates.render("acknowledgement", {"case_tag": "Conduct", "case": "7"}).lower()
    assert "case #7" in text
    assert "what happens next" in text
    for helpful in (
        "who was involved",
        "who was targeted",
        "what happened, when and where",
        "who else saw it",
        "anonymous",
    ):
        assert helpful in text
    assert "do not need to engage any further" in text
    assert "safe person" in text
    assert "safe space" in text
    assert "immediate danger" in text
    assert "local" in text
    assert "authorities" in text


def test_the_acknowledgement_makes_no_claim_about_who_received_the_report() -> None:
    # False for recused staff and for reports to conduct+director@ (issue 10 item 8).
    text = " ".join(
        templates.render("acknowledgement", {"case_tag": "Conduct", "case": "7"}).split()
    )
    assert "every member" not in text.lower()
    assert "team has received" not in text.lower()
    assert "reach the conduct team" not in text.lower()
    assert "passed to the people who handle it" in text


def test_the_acknowledgement_has_no_placeholder_for_report_content() -> None:
    assert templates.fields("acknowledgement") == {"case_tag", "case"}


def test_a_missing_placeholder_is_an_error_not_a_blank() -> None:
    with pytest.raises(templates.TemplateError, match="case_tag"):
        templates.render("acknowledgement", {"case": "1"})
