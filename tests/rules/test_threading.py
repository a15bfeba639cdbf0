"""The threading decision: signed address, reference, case address, subject tag, new case."""

from __future__ import annotations

import pytest

from rules.threading import (
    RULES,
    ThreadDecision,
    ThreadFacts,
    ThreadSignals,
    decide,
    reference_chain,
    subject_tag,
)

REPORTER = "reporter@example.net"
OUTSIDER = "outsider@example.com"

FACTS = ThreadFacts(
    generated_ids={"gen-7@example.org": 7, "gen-9@example.org": 9, "gen-gone@example.org": 99},
    received_ids={"in-7@mail.example.net": 7, "in-9@mail.example.net": 9},
    participants={
        7: frozenset({REPORTER, "bob@example.org"}),
        9: frozenset({"other@example.net"}),
    },
    existing_cases=frozenset({7, 9}),
)


def test_the_rule_table_is_in_the_spec_order() -> None:
    assert [rule_id for rule_id, _ in RULES] == [
        "signed-address",
        "reference",
        "case-address",
        "subject-tag",
    ]


def test_a_signed_address_joins_its_case_whoever_sends() -> None:
    decision = decide(ThreadSignals(sender=OUTSIDER, signed_cases=(7,)), FACTS)
    assert decision == ThreadDecision(7, "signed-address")


def test_a_signed_address_wins_over_a_reference_to_another_case() -> None:
    signals = ThreadSignals(sender=REPORTER, signed_cases=(9,), references=("gen-7@example.org",))
    assert decide(signals, FACTS) == ThreadDecision(9, "signed-address")


def test_a_generated_id_reference_joins_its_case_from_anyone() -> None:
    signals = ThreadSignals(sender=OUTSIDER, references=("gen-7@example.org",))
    assert decide(signals, FACTS) == ThreadDecision(7, "reference")


def test_a_received_id_reference_joins_only_a_participant() -> None:
    from_participant = ThreadSignals(sender=REPORTER, references=("in-7@mail.example.net",))
    from_outsider = ThreadSignals(sender=OUTSIDER, references=("in-7@mail.example.net",))
    assert decide(from_participant, FACTS) == ThreadDecision(7, "reference")
    assert decide(from_outsider, FACTS) == ThreadDecision(None, "new-case")


def test_the_nearest_qualifying_reference_wins() -> None:
    signals = ThreadSignals(
        sender=REPORTER,
        references=("unknown@x", "in-9@mail.example.net", "gen-7@example.org", "gen-9@example.org"),
    )
    # in-9 is skipped (the reporter is no participant of 9); gen-7 is nearer than gen-9.
    assert decide(signals, FACTS) == ThreadDecision(7, "reference")


def test_a_reference_to_a_case_that_no_longer_exists_does_not_join() -> None:
    signals = ThreadSignals(sender=REPORTER, references=("gen-gone@example.org",))
    assert decide(signals, FACTS).case is None


def test_a_reference_wins_over_a_case_address() -> None:
    signals = ThreadSignals(
        sender="other@example.net", references=("gen-7@example.org",), case_address_numbers=(9,)
    )
    assert decide(signals, FACTS) == ThreadDecision(7, "reference")


def test_a_case_address_joins_a_participant() -> None:
    signals = ThreadSignals(sender=REPORTER, case_address_numbers=(7,))
    assert decide(signals, FACTS) == ThreadDecision(7, "case-address")


def test_a_case_address_wins_over_a_subject_tag() -> None:
    signals = ThreadSignals(sender=REPORTER, case_address_numbers=(7,), subject_tag_number=7)
    assert decide(signals, FACTS).rule == "case-address"


def test_a_subject_tag_joins_a_participant() -> None:
    signals = ThreadSignals(sender="other@example.net", subject_tag_number=9)
    assert decide(signals, FACTS) == ThreadDecision(9, "subject-tag")


def test_an_outsider_guessing_a_case_address_opens_a_new_case_possibly_related() -> None:
    signals = ThreadSignals(sender=OUTSIDER, case_address_numbers=(7,))
    assert decide(signals, FACTS) == ThreadDecision(None, "new-case", possibly_related=7)


def test_an_outsider_guessing_a_subject_tag_opens_a_new_case_possibly_related() -> None:
    signals = ThreadSignals(sender=OUTSIDER, subject_tag_number=9)
    assert decide(signals, FACTS) == ThreadDecision(None, "new-case", possibly_related=9)


def test_a_participant_of_another_case_does_not_join_by_naming_this_one() -> None:
    signals = ThreadSignals(sender=REPORTER, case_address_numbers=(9,))
    assert decide(signals, FACTS) == ThreadDecision(None, "new-case", possibly_related=9)


def test_an_unknown_case_number_never_joins_and_is_not_related() -> None:
    signals = ThreadSignals(
        sender=REPORTER, signed_cases=(404,), case_address_numbers=(404,), subject_tag_number=404
    )
    assert decide(signals, FACTS) == ThreadDecision(None, "new-case", possibly_related=None)


def test_mail_with_no_signals_opens_a_new_case() -> None:
    assert decide(ThreadSignals(sender=REPORTER), ThreadFacts()) == ThreadDecision(None, "new-case")


def test_reference_chain_puts_in_reply_to_first_then_references_last_to_first() -> None:
    chain = reference_chain("<c@x>", "<a@x> <b@x>\r\n <c@x>")
    assert chain == ("c@x", "b@x", "a@x")


def test_reference_chain_reads_ids_without_brackets_and_ignores_comments() -> None:
    assert reference_chain("<p@x> (Alice's message of Monday)", None) == ("p@x",)
    assert reference_chain(None, "a@x b@x") == ("b@x", "a@x")
    assert reference_chain(None, None) == ()
    assert reference_chain("", "<>") == ()


@pytest.mark.parametrize(
    "subject",
    [
        "[Conduct #42] A message from the Conduct team",
        "Re: [Conduct #42] A message",
        "RE: AW: Fwd: [conduct #42] x",
        "Fw: WG: SV: VS: Antw: TR: [Conduct #42] x",
        "RE : [Conduct #42] x",
        "Re[2]: [Conduct #42] x",
        "Re:[Conduct  # 42 ] x",
    ],
)
def test_subject_tag_is_found_after_reply_and_forward_prefixes(subject: str) -> None:
    assert subject_tag(subject, "Conduct") == 42


@pytest.mark.parametrize(
    "subject",
    [
        "About [Conduct #42]",
        "[Other #42] x",
        "[Conduct #0] x",
        "[Conduct #x] x",
        "[Conduct 42] x",
        "",
    ],
)
def test_subject_tag_is_none_elsewhere_or_malformed(subject: str) -> None:
    assert subject_tag(subject, "Conduct") is None


def test_subject_tag_escapes_the_case_tag() -> None:
    assert subject_tag("Re: [C.o.C #3] x", "C.o.C") == 3
    assert subject_tag("Re: [CxoxC #3] x", "C.o.C") is None
