"""Loop safety: suppressed automatic replies, automatic mail, bounces, the rate limit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rules.loops import (
    RATE_LIMIT_PER_HOUR,
    LoopFacts,
    is_automatic,
    is_bounce,
    rate_limit_allows,
    suppress_auto_reply,
)

PLAIN = LoopFacts(
    envelope_sender="alice@example.com",
    from_address="alice@example.com",
    content_type="text/plain",
    subject="Harassment at the meetup",
)


def test_ordinary_mail_may_get_a_reply_and_is_not_automatic() -> None:
    assert suppress_auto_reply(PLAIN) is None
    assert not is_automatic(PLAIN)
    assert not is_bounce(PLAIN, to_bounce_address=False)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"envelope_sender": None}, "null-sender"),
        ({"envelope_sender": ""}, "null-sender"),
        ({"envelope_sender": "<>"}, "null-sender"),
        ({"envelope_sender": "MAILER-DAEMON@mx.example.com"}, "mailer-daemon"),
        ({"from_address": "Mailer-Daemon@mx.example.com"}, "mailer-daemon"),
        ({"auto_submitted": "auto-replied"}, "auto-submitted"),
        ({"auto_submitted": "auto-generated"}, "auto-submitted"),
        ({"auto_submitted": "Auto-Notified; owner-email=x@example.com"}, "auto-submitted"),
        ({"auto_submitted": ""}, "auto-submitted"),
        ({"precedence": "bulk"}, "precedence-bulk"),
        ({"precedence": " List "}, "precedence-bulk"),
        ({"precedence": "JUNK"}, "precedence-bulk"),
        ({"list_id": "<dev.lists.example.org>"}, "list-id"),
        ({"x_autoreply": "yes"}, "x-autoreply"),
        ({"x_autorespond": "true"}, "x-autorespond"),
        ({"content_type": "Multipart/Report"}, "dsn"),
        ({"subject": "Out of Office: Harassment"}, "out-of-office"),
    ],
)
def test_each_loop_signal_suppresses_the_automatic_reply(
    change: dict[str, str | None], reason: str
) -> None:
    assert suppress_auto_reply(replace(PLAIN, **change)) == reason


@pytest.mark.parametrize("value", ["no", "No", " no ", "no (a person wrote this)"])
def test_auto_submitted_no_is_a_person(value: str) -> None:
    facts = replace(PLAIN, auto_submitted=value)
    assert suppress_auto_reply(facts) is None
    assert not is_automatic(facts)


@pytest.mark.parametrize("value", ["first-class", "normal", "urgent"])
def test_other_precedence_values_do_not_suppress(value: str) -> None:
    assert suppress_auto_reply(replace(PLAIN, precedence=value)) is None


def test_null_sender_that_is_not_a_dsn_is_ordinary_mail_without_reply() -> None:
    facts = replace(PLAIN, envelope_sender=None)
    assert suppress_auto_reply(facts) == "null-sender"
    assert not is_automatic(facts)
    assert not is_bounce(facts, to_bounce_address=False)


@pytest.mark.parametrize(
    "change",
    [{"precedence": "bulk"}, {"precedence": "list"}, {"list_id": "<team.example.org>"}],
)
def test_precedence_and_list_id_only_suppress_replies(change: dict[str, str]) -> None:
    facts = replace(PLAIN, **change)
    assert suppress_auto_reply(facts) is not None
    assert not is_automatic(facts)


@pytest.mark.parametrize(
    "change",
    [
        {"auto_submitted": "auto-replied"},
        {"x_autoreply": "yes"},
        {"x_autorespond": "1"},
        {"content_type": "multipart/report", "report_type": "disposition-notification"},
    ],
)
def test_automatic_headers_make_mail_automatic(change: dict[str, str]) -> None:
    assert is_automatic(replace(PLAIN, **change))


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Re: your report",
        "Out of the office",
        "[Out of office] back Monday",
        "Automatic reply: Harassment at the meetup",
        "Autoreply: your mail",
        "Auto-Reply: your mail",
        "Auto: your mail",
        "Abwesenheitsnotiz: Ihre Nachricht",
        "Automatische Antwort: Meldung",
        "Réponse automatique : signalement",
        "RÉPONSE AUTOMATIQUE: signalement",
        "Respuesta automática: informe",
        "Risposta automatica: segnalazione",
        "Automatisch antwoord: melding",
        "Autosvar: rapport",
        "Automaattinen vastaus: ilmoitus",
        "Odpowiedź automatyczna: zgłoszenie",
        "Автоматический ответ: жалоба",
        "自动回复: 报告",
        "自動返信: 報告",
    ],
)
def test_out_of_office_subjects_in_several_languages_are_automatic(subject: str) -> None:
    facts = replace(PLAIN, subject=subject)
    assert is_automatic(facts)
    assert suppress_auto_reply(facts) == "out-of-office"


def test_out_of_office_subject_matches_decomposed_accents() -> None:
    decomposed = "Re\u0301ponse automatique: signalement"
    assert is_automatic(replace(PLAIN, subject=decomposed))


@pytest.mark.parametrize(
    "subject",
    [
        "Harassment at the out of office party",
        "Re: Out of Office: your report",
        "Automatically generated slurs in the bot",
        "Autos parked in the venue",
        "",
    ],
)
def test_reports_merely_mentioning_autoreplies_are_not_automatic(subject: str) -> None:
    assert not is_automatic(replace(PLAIN, subject=subject))


def test_missing_subject_is_not_automatic() -> None:
    assert not is_automatic(replace(PLAIN, subject=None))


@pytest.mark.parametrize("report_type", ["delivery-status", "Delivery-Status", None])
def test_multipart_report_dsn_is_a_bounce(report_type: str | None) -> None:
    facts = replace(
        PLAIN, envelope_sender=None, content_type="multipart/report", report_type=report_type
    )
    assert is_bounce(facts, to_bounce_address=False)
    assert suppress_auto_reply(facts) == "null-sender"


@pytest.mark.parametrize("report_type", ["disposition-notification", "feedback-report"])
def test_read_receipts_and_abuse_reports_are_not_bounces(report_type: str) -> None:
    facts = replace(PLAIN, content_type="multipart/report", report_type=report_type)
    assert not is_bounce(facts, to_bounce_address=False)
    assert suppress_auto_reply(facts) == "dsn"


def test_any_mail_to_a_bounce_address_is_a_bounce() -> None:
    assert is_bounce(PLAIN, to_bounce_address=True)


def test_autoreply_with_null_sender_is_not_a_bounce() -> None:
    facts = replace(PLAIN, envelope_sender=None, auto_submitted="auto-replied")
    assert not is_bounce(facts, to_bounce_address=False)


def test_rate_limit_allows_five_replies_an_hour_and_refuses_the_sixth() -> None:
    assert RATE_LIMIT_PER_HOUR == 5
    assert rate_limit_allows(0)
    assert rate_limit_allows(4)
    assert not rate_limit_allows(5)
    assert not rate_limit_allows(6)


def test_rate_limit_takes_another_limit() -> None:
    assert rate_limit_allows(9, limit=10)
    assert not rate_limit_allows(10, limit=10)
    assert not rate_limit_allows(0, limit=0)
