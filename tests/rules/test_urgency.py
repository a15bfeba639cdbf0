"""Danger signals that make a report urgent; the matching errs toward urgent."""

from __future__ import annotations

import pytest

from rules.urgency import SIGNALS, is_urgent, urgency_signals


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("He threatened me after the talk.", "threat"),
        ("I received THREATS by DM", "threat"),
        ("They tried to blackmail me", "threat"),
        ("There was violence at the venue", "violence"),
        ("he got violent", "violence"),
        ("I feel unsafe at the conference", "unsafe"),
        ("I don't feel safe going back", "unsafe"),
        ("I don’t feel safe", "unsafe"),
        ("I am not safe here", "unsafe"),
        ("she mentioned self-harm", "self-harm"),
        ("thoughts of self harm", "self-harm"),
        ("they talked about suicide", "suicide"),
        ("he seemed suicidal", "suicide"),
        ("I want to end my life", "suicide"),
        ("He has been stalking me online", "stalking"),
        ("a stalker from the project", "stalking"),
        ("he followed me home", "stalking"),
        ("I was sexually assaulted", "assault"),
        ("he groped her at the party", "assault"),
        ("he brought a weapon", "weapon"),
        ("he said he owns a gun", "weapon"),
        ("he said he would kill me", "kill"),
        ("death threats: I'll murder you", "kill"),
        ("he hurt me", "hurt"),
        ("I am afraid for my life", "fear-for-life"),
        ("I fear for my safety", "fear-for-life"),
        ("they doxxed me", "doxxing"),
        ("my info was doxed", "doxxing"),
        ("someone posted my home address", "doxxing"),
        ("I am in danger", "danger"),
        ("Ｔｈｒｅａｔ in full width", "threat"),
    ],
)
def test_danger_signals_are_found(text: str, signal: str) -> None:
    assert signal in urgency_signals(text)
    assert is_urgent(text)


@pytest.mark.parametrize(
    "text",
    [
        "He keeps interrupting people in code review.",
        "The talk was unthreatening and the skill level was high.",
        "Our doxygen build is broken.",
        "We deploy with gunicorn.",
        "She brought grapes to the sprint.",
        "I found the comments harmless but rude.",
        "Please fix the broken link on the code of conduct page.",
        "",
    ],
)
def test_ordinary_complaints_and_lookalike_words_are_not_urgent(text: str) -> None:
    assert urgency_signals(text) == ()
    assert not is_urgent(text)


def test_negation_still_counts_because_the_check_errs_toward_urgent() -> None:
    assert is_urgent("I do not feel threatened, but he was rude")


def test_signals_are_reported_once_each_in_table_order() -> None:
    text = "He threatened to kill me, threatened again, and I feel unsafe."
    assert urgency_signals(text) == ("threat", "unsafe", "kill")
    assert set(urgency_signals(text)) <= set(SIGNALS)


def test_signal_names_are_stable_kebab_case() -> None:
    assert all(name == name.lower() and " " not in name for name in SIGNALS)
    assert len(set(SIGNALS)) == len(SIGNALS)
