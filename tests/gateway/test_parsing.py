"""What parse() extracts from mail that breaks help desks: the corpus in tests/data/."""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import random
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import tnefparse

from gateway.parsing import MAX_HEADER_VALUE, parse
from handlers.message import Attachment, ParsedMessage
from rules import loops

DATA = Path(__file__).resolve().parent.parent / "data"
CORPUS = sorted(DATA.glob("*.eml"))
SENDER = "sender@example.net"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def parsed(name: str, envelope_sender: str | None = SENDER) -> ParsedMessage:
    return parse(load(name), envelope_sender)


def tnef_stream(name: str) -> bytes:
    message = email.message_from_bytes(load(name), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    for part in message.walk():
        if part.get_content_type() == "application/ms-tnef":
            content = part.get_content()
            assert isinstance(content, bytes)
            return content
    raise AssertionError(f"no winmail.dat in {name}")


# --- the corpus as a whole ------------------------------------------------------------------


def test_corpus_holds_the_files_the_readme_lists() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert len(CORPUS) >= 20
    for path in CORPUS:
        assert f"`{path.name}`" in readme


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_files_have_crlf_line_endings(path: Path) -> None:
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_corpus_file_parses_without_raising(path: Path) -> None:
    message = parse(path.read_bytes(), SENDER)
    assert isinstance(message, ParsedMessage)
    assert isinstance(message.text, str)
    assert "\ufffd" not in message.subject + message.from_name


# --- ordinary mail from the common clients --------------------------------------------------


def test_plain_report_yields_decoded_headers_and_utf8_text() -> None:
    message = parsed("report-plain.eml")
    assert message.from_name == "Zoë Reporter"
    assert message.from_address == "zoe.reporter@example.net"
    assert message.from_written == "Zoe.Reporter+conduct@Example.NET"
    assert message.subject == "Report: harassment at the Zürich meetup"
    assert message.message_id == "CAF3x9Qm1kP2vZ-report-0001@mail.example.net"
    assert message.date == datetime(2026, 11, 23, 9, 13, 58, tzinfo=UTC)
    assert message.references == ()
    assert message.to_cc == ("conduct@example.org", "moderators@example.org")
    assert "in the café\r\nafter the talks" in message.text
    assert message.text.rstrip().endswith("Zoë")
    assert not message.html_only
    assert message.attachments == ()
    assert message.defects == ()
    assert message.reported_message_ids == ()
    assert not loops.is_automatic(message.loop)
    assert loops.suppress_auto_reply(message.loop) is None


def test_o365_html_only_reply_is_rendered_as_text_without_tags() -> None:
    message = parsed("html-only-o365.eml")
    assert message.html_only
    assert message.from_address == "priya.natarajan@contoso.example"
    assert message.subject == "RE: [Conduct #42] We received your report"
    assert message.references == ("ack-42-1@conduct.example.org",)
    assert "I’d like to add that the same person messaged me again" in message.text
    assert "on the project chat & I have kept the logs." in message.text
    # The <div> quote block survives as text, without its markup.
    assert "We received your report and opened case 42." in message.text
    assert "Conduct Team <conduct@example.org>" in message.text
    for markup in ("<div", "<p", "</", "MsoNormal", "=3D", "&nbsp;", "&amp;", "mso"):
        assert markup not in message.text
    assert message.attachments == ()
    assert not loops.is_automatic(message.loop)


def test_outlook_reply_has_no_references_and_keeps_its_quoted_header_block() -> None:
    message = parsed("outlook-reply-thread-index.eml")
    # Outlook threads by Thread-Index only: nothing here for the reference rule.
    assert message.references == ()
    assert message.message_id is not None
    assert message.message_id.endswith("@DB7PR02MB4997.eurprd02.prod.outlook.com")
    assert message.subject == "RE: [Conduct #42] We received your report"
    assert not message.html_only
    # The text/plain alternative, its quoted-printable soft break joined.
    assert "around 9pm. I have asked two colleagues" in message.text
    assert "From: Conduct Team <conduct@example.org>\r\nSent: Monday, November 23" in message.text
    assert "<div" not in message.text


def test_gmail_reply_gives_references_nearest_first_and_the_plain_alternative() -> None:
    message = parsed("gmail-reply.eml")
    assert message.references == (
        "ack-42-1@conduct.example.org",
        "CAF3x9Qm1kP2vZ-report-0001@mail.example.net",
    )
    assert message.message_id == "CAJ8vN2q0bXo=5dT7rG4wFhY1sKp3eLm9cVzA6uQ@mail.gmail.example"
    assert message.from_address == "alex.moreau@gmail.example"
    assert message.to_cc == ("conduct@example.org",)
    assert not message.html_only
    assert message.text.startswith("Thanks for the quick answer.")
    # The attribution line wraps in the plain part; it is kept as written.
    assert "On Mon, 23 Nov 2026 at 10:02, Conduct Team <conduct@example.org>\r\nwrote:" in (
        message.text
    )
    assert "gmail_quote" not in message.text


def test_apple_mail_format_flowed_text_is_unflowed() -> None:
    message = parsed("apple-mail-reply.eml")
    assert message.message_id == "8E2F1C4A-6B3D-4F7E-9A21-0C5D8B7E3F19@berg.example"
    assert message.references == ("ack-42-1@conduct.example.org",)
    # RFC 3676 soft breaks are joined; delsp=yes drops the space that marked them.
    assert (
        "He followed her out of the café and kept talking after she said no. "
        "I am happy to give a written statement if that helps." in message.text
    )
    assert "> On 23 Nov 2026, at 10:02, Conduct Team <conduct@example.org> wrote:" in message.text
    assert (
        "> We received your report and opened case 42. Reply to this message to add anything."
        in message.text
    )
    assert not message.html_only


# --- forwards -------------------------------------------------------------------------------


def test_forwarded_report_keeps_the_inline_forward_and_lists_the_attached_original() -> None:
    message = parsed("forwarded-report.eml")
    assert message.message_id == "CAD4w7Rk0F2pLx9=forward-7@mail.gmail.example"
    assert message.from_address == "dana@example.org"
    assert message.subject == "Fwd: What happened in the hallway track"
    assert message.text.startswith("Mira asked me to forward this to you.")
    assert "---------- Forwarded message ---------\r\nFrom: Mira Okafor" in message.text
    assert "made jokes about my appearance" in message.text
    assert message.attachments == (
        Attachment("What happened in the hallway track.eml", "message/rfc822", 556),
    )


def test_forward_as_attachment_takes_the_forwarders_html_note_not_the_originals_text() -> None:
    message = parsed("forwarded-as-attachment-html.eml")
    assert message.html_only
    assert "Forwarding Mira's message with her permission" in message.text
    assert "Dana, I don't know who else to tell" not in message.text
    assert message.attachments == (Attachment("message.eml", "message/rfc822", 556),)


# --- charsets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subject", "phrase"),
    [
        # Declared UTF-8, bytes are ISO-8859-1; the Subject is raw 8-bit too.
        (
            "latin1-mislabelled.eml",
            "Réunion du jeudi : incident au café",
            "Lors de la réunion de jeudi, au café, un participant a tenu des propos\r\ndéplacés",
        ),
        # Declared us-ascii, bytes are ISO-8859-1.
        ("latin1-us-ascii.eml", "Møde i København", "Mødet i København i går"),
        ("unknown-8bit.eml", "Comentários na sessão de sábado", "Gostaria de fazer uma denúncia."),
    ],
)
def test_mislabelled_8bit_is_decoded_by_the_fallback_not_as_mojibake(
    name: str, subject: str, phrase: str
) -> None:
    message = parsed(name)
    assert message.subject == subject
    assert phrase in message.text
    for mojibake in ("\ufffd", "Ã", "\udce9"):
        assert mojibake not in message.subject + message.text
    assert message.from_address is not None


def test_iso_2022_jp_subject_name_and_body_are_decoded() -> None:
    message = parsed("iso-2022-jp.eml")
    assert message.subject == "会議での嫌がらせについて"
    assert message.from_name == "佐藤 花子"
    assert message.from_address == "hanako.sato@example.jp"
    assert message.date == datetime(2026, 11, 25, 18, 12, 45, tzinfo=timezone(timedelta(hours=9)))
    assert "先週の会議で、ある参加者から繰り返し嫌がらせを受けました。" in message.text
    assert "\x1b$B" not in message.text


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("report-plain.eml", "I want to report behaviour at the Zürich meetup"),
        ("iso-2022-jp.eml", "詳細をお伝えしたいので、ご連絡ください。"),
    ],
)
def test_text_is_decoded_as_the_standard_library_decodes_it(name: str, phrase: str) -> None:
    # mail-parser 4.8 hands back ISO-2022-JP text with its escape sequences undecoded
    # (and 8-bit mislabelled text as U+FFFD), which is why the text comes from the stdlib.
    reference = email.message_from_bytes(load(name), policy=email.policy.default)
    assert isinstance(reference, email.message.EmailMessage)
    body = reference.get_body(("plain",))
    assert body is not None
    message = parsed(name)
    assert message.text == body.get_content()
    assert phrase in message.text


def test_raw_utf8_headers_and_attachment_name_are_read_as_utf8() -> None:
    message = parsed("raw-utf8-headers.eml")
    assert message.from_name == "Jürgen Groß"
    assert message.subject == "Beschwerde über den Vortrag am Freitag"
    assert message.attachments == (Attachment("Prüfung der Vorfälle.pdf", "application/pdf", 52),)
    assert message.text == "Im Anhang meine Notizen zum Vortrag.\r\n"


# --- Outlook TNEF ---------------------------------------------------------------------------


def test_corpus_winmail_dat_is_a_valid_tnef_stream() -> None:
    tnef = tnefparse.TNEF(tnef_stream("tnef-winmail.eml"), do_checksum=True)
    assert all(attribute.good_checksum for attribute in tnef.objects)
    assert tnef.body.startswith(b"Please find my written statement attached.")
    assert [(a.name, len(a.data)) for a in tnef.attachments] == [("statement.txt", 456)]


def test_tnef_body_becomes_the_text_and_its_attachment_is_listed() -> None:
    message = parsed("tnef-winmail.eml")
    assert message.text.startswith("Please find my written statement attached.\r\n")
    assert "It covers both incidents at the sprint." in message.text
    assert message.attachments == (
        Attachment("statement.txt", "application/octet-stream", 456),
        Attachment("winmail.dat", "application/ms-tnef", len(tnef_stream("tnef-winmail.eml"))),
    )
    assert message.message_id == "000001d9c4a1$2b3c4d50$81b6e7f0$@fabrikam.example"


def test_tnef_attachment_title_in_cp1252_is_decoded_not_a_crash() -> None:
    message = parsed("tnef-winmail-cp1252.eml")
    assert message.subject == "Résumé des faits"
    assert message.text == "Voir le résumé ci-joint.\r\n"
    assert Attachment("Résumé des faits.txt", "application/octet-stream", 80) in (
        message.attachments
    )


# --- missing headers ------------------------------------------------------------------------


def test_missing_message_id_is_none_and_the_rest_is_read() -> None:
    message = parsed("no-message-id.eml")
    assert message.message_id is None
    assert message.from_address == "kim.park@example.kr"
    assert message.subject == "Problem at the workshop"
    assert "kept interrupting the women" in message.text


def test_missing_from_gives_no_address_and_the_rest_is_read() -> None:
    message = parsed("no-from.eml", envelope_sender="www-data@forms.example.org")
    assert message.from_address is None
    assert message.from_written is None
    assert message.from_name == ""
    assert message.message_id == "form-8812@forms.example.org"
    assert "a speaker used slurs during the Q&A." in message.text
    assert loops.suppress_auto_reply(message.loop) is None


def from_header(value: bytes) -> ParsedMessage:
    return parse(b"From: " + value + b"\r\nTo: conduct@example.org\r\n\r\nreport\r\n", SENDER)


def test_an_address_longer_than_an_smtp_path_is_no_usable_from() -> None:
    """RFC 5321 section 4.5.3.1.3: a path holds 256 octets with its angle brackets."""
    local = b"r" * 60
    longest = local + b"@" + b".".join([b"d" * 63] * 3) + b".e"  # 254 octets
    assert len(longest) == 254
    assert from_header(b"Rita <" + longest + b">").from_address == longest.decode()
    too_long = local + b"@" + b".".join([b"d" * 60] * 5) + b".net"
    message = from_header(b"Rita <" + too_long + b">")
    assert (message.from_address, message.from_written) == (None, None)
    assert message.from_name == "Rita"
    assert message.loop.envelope_sender == SENDER  # the acknowledgement still has a way


# --- broken MIME ----------------------------------------------------------------------------


def test_unclosed_boundary_is_a_defect_and_the_parts_are_still_read() -> None:
    message = parsed("broken-mime-boundary.eml")
    assert "CloseBoundaryNotFoundDefect" in message.defects
    assert message.text == "Here are the chat logs; the upload was cut off, sorry.\r\n"
    assert [a.name for a in message.attachments] == ["chat-log.txt"]
    assert message.attachments[0].size > 0


def test_parts_with_the_wrong_boundary_keep_their_text_as_plain() -> None:
    message = parsed("broken-mime-wrong-boundary.eml")
    assert "StartBoundaryNotFoundDefect" in message.defects
    assert "anon123 told me nobody wants me\r\nin the project." in message.text
    assert not message.html_only


def test_invalid_base64_attachment_is_a_defect_and_keeps_what_decodes() -> None:
    message = parsed("broken-base64.eml")
    assert any("Base64" in defect for defect in message.defects)
    assert message.text == "The flyer someone left on my chair is attached.\r\n"
    assert [(a.name, a.content_type) for a in message.attachments] == [("flyer.jpg", "image/jpeg")]
    assert message.attachments[0].size > 0


def test_huge_folded_subject_is_cut_and_the_rest_is_read() -> None:
    raw = load("huge-header.eml")
    assert len(raw) > 200_000
    message = parse(raw, SENDER)
    assert message.subject.startswith("Huge subject word00000 word00001 word00002")
    assert len(message.subject) == MAX_HEADER_VALUE
    assert message.message_id == "huge-header-1@example.net"
    assert message.from_address == "cannon@example.net"
    assert message.text == "The body after a very long header.\r\n"


def test_a_megabyte_subject_is_cut_to_the_header_limit() -> None:
    # The stdlib's header parser is quadratic: uncut, this Subject took about 30 s. Tests
    # never assert speed; the cut itself is the behaviour checked.
    folded = "\r\n ".join(["harassment report words in a long folded subject"] * 24_000)
    raw = f"From: a@example.org\r\nSubject: {folded}\r\n\r\nbody\r\n".encode()
    assert len(raw) > 1_000_000
    message = parse(raw, SENDER)
    assert len(message.subject) == MAX_HEADER_VALUE
    assert message.subject.startswith("harassment report words")
    assert message.from_address == "a@example.org"


# --- automatic mail -------------------------------------------------------------------------


def test_exchange_out_of_office_is_automatic_and_suppresses_replies() -> None:
    message = parsed("auto-reply-ooo.eml", envelope_sender="priya.natarajan@contoso.example")
    assert message.loop.auto_submitted == "auto-replied"
    assert message.subject == "Automatic reply: [Conduct #42] We received your report"
    assert message.references == ("ack-42-1@conduct.example.org",)
    assert loops.is_automatic(message.loop)
    assert not loops.is_bounce(message.loop, to_bounce_address=False)
    assert loops.suppress_auto_reply(message.loop) == loops.AUTO_SUBMITTED
    null_sender = parsed("auto-reply-ooo.eml", envelope_sender="")
    assert loops.suppress_auto_reply(null_sender.loop) == loops.NULL_SENDER


def test_out_of_office_subject_alone_still_marks_it_automatic() -> None:
    raw = load("auto-reply-ooo.eml").replace(b"Auto-Submitted: auto-replied\r\n", b"")
    message = parse(raw, "priya.natarajan@contoso.example")
    assert message.loop.auto_submitted is None
    assert loops.is_automatic(message.loop)
    assert loops.suppress_auto_reply(message.loop) == loops.OUT_OF_OFFICE


def test_vacation_reply_with_x_autoreply_and_precedence_bulk() -> None:
    message = parsed("auto-reply-vacation.eml", envelope_sender="jonas@berg.example")
    assert message.loop.x_autoreply == "yes"
    assert message.loop.precedence == "bulk"
    assert message.from_name == ""
    assert message.from_address == "jonas@berg.example"
    assert loops.is_automatic(message.loop)
    assert not loops.is_bounce(message.loop, to_bounce_address=False)
    assert loops.suppress_auto_reply(message.loop) == loops.X_AUTOREPLY


def test_precedence_bulk_alone_suppresses_replies_but_is_not_automatic() -> None:
    raw = load("auto-reply-vacation.eml").replace(b"X-Autoreply: yes\r\n", b"")
    message = parse(raw, "jonas@berg.example")
    assert not loops.is_automatic(message.loop)
    assert loops.suppress_auto_reply(message.loop) == loops.PRECEDENCE_BULK


@pytest.mark.parametrize("name", ["dsn-bounce.eml", "dsn-bounce-full.eml"])
def test_dsn_reports_the_bounced_message_id_and_is_a_bounce(name: str) -> None:
    message = parsed(name, envelope_sender="")
    assert message.reported_message_ids == ("sent-123@example.org",)
    assert message.loop.content_type == "multipart/report"
    assert message.loop.report_type == "delivery-status"
    assert message.from_address is not None
    assert message.from_address.startswith("mailer-daemon@")
    assert loops.is_bounce(message.loop, to_bounce_address=False)
    assert loops.is_automatic(message.loop)
    assert loops.suppress_auto_reply(message.loop) == loops.NULL_SENDER
    # The text is the human-readable notification, not the status fields or the original.
    assert "nobody@gone.example" in message.text
    assert "Final-Recipient" not in message.text
    assert "opened case 42" not in message.text
    assert not message.html_only


def test_dsn_from_mailer_daemon_with_a_sender_is_suppressed_as_mailer_daemon() -> None:
    message = parsed("dsn-bounce.eml", envelope_sender="MAILER-DAEMON@mx.example.org")
    assert loops.suppress_auto_reply(message.loop) == loops.MAILER_DAEMON


def test_dsn_with_the_full_original_lists_it_as_an_attached_message() -> None:
    message = parsed("dsn-bounce-full.eml", envelope_sender="")
    assert [(a.name, a.content_type) for a in message.attachments] == [
        ("message.eml", "message/rfc822")
    ]
    assert message.attachments[0].size > 0


# --- size and garbage -----------------------------------------------------------------------


def test_twenty_megabyte_attachment_parses_with_its_size() -> None:
    size = 20 * 1024 * 1024
    data = random.Random(20).randbytes(size)
    raw = (
        b"From: Ana Lima <ana@example.br>\r\nTo: conduct@example.org\r\n"
        b"Subject: Video of the incident\r\nMessage-ID: <video-1@example.br>\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="video-boundary"\r\n\r\n'
        b"--video-boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"The video is attached.\r\n"
        b'--video-boundary\r\nContent-Type: video/mp4; name="incident.mp4"\r\n'
        b'Content-Disposition: attachment; filename="incident.mp4"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
        + b"--video-boundary--\r\n"
    )
    message = parse(raw, SENDER)
    assert message.attachments == (Attachment("incident.mp4", "video/mp4", size),)
    assert message.text == "The video is attached."
    assert message.message_id == "video-1@example.br"


def _random_bytes(seed: int) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(rng.randrange(1, 4096))


def _mutated_corpus(seed: int) -> bytes:
    rng = random.Random(seed)
    raw = bytearray(rng.choice([p for p in CORPUS if p.stat().st_size < 10_000]).read_bytes())
    for _ in range(20):
        position = rng.randrange(len(raw))
        raw[position : position + rng.randrange(3)] = rng.choice(
            [b"\x00", b"\r", b"\n", b"=?", b"--", b"\xff", b'"', b";", rng.randbytes(4)]
        )
    return bytes(raw)


GARBAGE = {
    "empty": b"",
    "nul-bytes": b"\x00" * 1000,
    "lone-cr": b"\r" * 1000,
    "lone-cr-headers": b"From: a@example.org\rSubject: lone CR\r\rbody\rline\r",
    "nul-in-headers-and-charset": (
        b"From: a\x00b@example.org\r\nSubject: \x00x\r\nMessage-ID: <\x00@x>\r\n"
        b'Content-Type: text/plain; charset="utf\x00-8"\r\n\r\nbody\x00\r\n'
    ),
    "headers-only": b"From: a@example.org\r\nSubject: no body",
    "bad-encoded-words": (
        b"From: =?utf-8?b?!!!?= <a@example.org>\r\nSubject: =?x-unknown?q?caf=E9?=\r\n"
        b"Date: not a date\r\nContent-Type: text/html; charset=bogus\r\n\r\n<p>hi\r\n"
    ),
    "tnef-garbage": (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(struct.pack("<IH", 0x223E9F78, 1) + b"\x01\x0c\x80\x02\x00\xff\xff")
        + b"\r\n--b--\r\n"
    ),
    **{f"random-{seed}": _random_bytes(seed) for seed in range(5)},
    **{f"mutated-corpus-{seed}": _mutated_corpus(seed) for seed in range(5)},
}


@pytest.mark.parametrize("raw", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_never_raises(raw: bytes) -> None:
    for envelope_sender in (None, "", SENDER):
        message = parse(raw, envelope_sender)
        assert isinstance(message, ParsedMessage)
        assert isinstance(message.text, str)
