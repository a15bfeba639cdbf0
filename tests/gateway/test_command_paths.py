"""Staff commands by email, the paths test_commands.py leaves out: switches turned off, the
director on an urgent case, unbans and held posts by email, closing, recused directors,
forged Reply-To, the reporter's address however it is written, a party to a case who later
joins the staff, bounces of mail sent by staff who have left."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.reminder_jobs import Jobs
from storage import held
from storage.models import AuditEvent, BanRow, HeldPost
from tests.gateway.gateway_setup import Gateway
from tests.gateway.test_commands import (
    NEW_STAFF,
    REPORT,
    body_of,
    case,
    command,
    gw,  # noqa: F401 (the fixture)
    last_result,
    mails,
    participants,
    reconfigure,
    run,
    second_case,
    signed,
    store,
)


def test_anonymous_off_lets_notify_accused_name_the_reporter(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#accused mallory@example.com\r\n#anonymous off\r\n")
    assert case(gw).anonymous is False
    command(gw, "#notify-accused\r\nRita Reporter (rita@example.net) reported you.\r\n")
    [reply] = mails(gw, "reply")
    assert reply.recipient == "mallory@example.com"
    assert "Rita Reporter" in body_of(reply)
    assert case(gw).accused_notified_at is not None


def test_urgent_off_clears_the_mark(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#urgent\r\n")
    assert case(gw).urgent
    command(gw, "#urgent off\r\n")
    assert not case(gw).urgent
    assert "no longer urgent" in last_result(gw)


def test_the_director_commands_an_urgent_case(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#urgent\r\n")
    command(gw, "#status investigating\r\n#assign me\r\n", sender="ed@example.org")
    row = case(gw)
    assert (row.status, row.assignee) == ("investigating", "ed@example.org")
    assert mails(gw, "result")[-1].recipient == "ed@example.org"


def test_a_ban_is_lifted_by_pattern_and_by_id(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#ban mallory@example.com\r\n#ban troll@example.com list=dev@lists.example.org\r\n")
    command(gw, "#unban Mallory+x@example.com\r\n")
    with gw.database.transaction() as session:
        rows = {b.pattern: b for b in session.execute(select(BanRow)).scalars()}
    assert rows["mallory@example.com"].lifted_by == "alice@example.org"
    troll = rows["troll@example.com"]
    assert troll.lifted_at is None
    command(gw, f"#unban {troll.id}\r\n")
    with gw.database.transaction() as session:
        lifted = session.get(BanRow, troll.id)
        assert lifted is not None
        assert lifted.lifted_at is not None
    assert "lifted" in last_result(gw)


def test_held_posts_are_released_and_discarded_by_email(gw: Gateway) -> None:  # noqa: F811
    ids = []
    with gw.database.transaction() as session:
        for n in range(2):
            ids.append(
                held.hold(
                    session,
                    list_address="dev@lists.example.org",
                    sender="poster@example.net",
                    subject=f"post {n}",
                    reason="ban",
                    ban_id=None,
                    case=1,
                    envelope_sender="poster@example.net",
                    envelope_recipients=("dev@lists.example.org",),
                    raw=f"From: poster@example.net\r\nSubject: post {n}\r\n\r\nhi\r\n".encode(),
                    now=gw.now(),
                )
            )
    command(gw, f"#release {ids[0]}\r\n#discard {ids[1]}\r\n")
    with gw.database.transaction() as session:
        states = [
            session.execute(select(HeldPost.state).where(HeldPost.id == i)).scalar() for i in ids
        ]
    assert states == ["released", "discarded"]


def test_close_without_an_outcome_records_resolved(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#close thanks everyone\r\n")
    row = case(gw)
    assert (row.status, row.outcome, row.outcome_note) == ("closed", "resolved", "thanks everyone")
    assert row.expunge_at is not None


def test_close_banned_after_the_procedure(gw: Gateway) -> None:  # noqa: F811
    command(gw, "#close banned\r\n")
    assert case(gw).status == "new"
    assert "#escalate and #notify-accused" in last_result(gw)
    command(gw, "#accused mallory@example.com\r\n#escalate\r\n")
    command(gw, "#notify-accused\r\nA report was made about your conduct.\r\n")
    command(gw, "#ban mallory@example.com for=30d\r\n#close banned\r\n")
    row = case(gw)
    assert (row.status, row.outcome) == ("closed", "banned")
    with gw.database.transaction() as session:
        [ban] = session.execute(select(BanRow)).scalars()
    assert ban.expires_at is not None
    assert row.expunge_at is not None
    assert row.expunge_at > ban.expires_at  # kept past the ban's end (SPEC 7a)


def test_escalate_is_refused_when_the_director_is_recused(gw: Gateway) -> None:  # noqa: F811
    about_director = (
        REPORT.replace(b"c-rep1", b"c-rep9")
        .replace(b"Mallory was rude", b"Erin Director was rude")
        .replace(b"Subject: Harassment", b"Subject: About the director")
    )
    store(gw, about_director, "rita@example.net", ("conduct@example.org",))
    run(gw)
    command(gw, "#escalate\r\n", case=2)
    assert case(gw, 2).escalated_at is None
    assert "director is recused" in last_result(gw)
    assert [m for m in mails(gw) if m.recipient == "ed@example.org"] == []


def test_results_go_to_the_from_address_never_to_reply_to(gw: Gateway) -> None:  # noqa: F811
    address = signed(gw, 1, "alice@example.org")
    raw = (
        f"From: alice@example.org\r\nReply-To: mallory@example.com\r\nTo: {address}\r\n"
        "Subject: Re: report\r\nMessage-ID: <rt1@example.org>\r\n\r\n#status waiting\r\n"
    ).encode()
    store(gw, raw, "bounces@example.org", (address,))
    run(gw)
    [result] = mails(gw, "result")
    assert result.recipient == "alice@example.org"
    assert all(m.recipient != "mallory@example.com" for m in mails(gw))


def test_a_forged_reply_to_does_not_make_a_stranger_staff(gw: Gateway) -> None:  # noqa: F811
    """Reply-To naming a staff member, mail to that staff member's signed address."""
    address = signed(gw, 1, "alice@example.org")
    raw = (
        f"From: mallory@example.com\r\nReply-To: alice@example.org\r\nTo: {address}\r\n"
        "Subject: Re: report\r\nMessage-ID: <rt2@example.org>\r\n\r\n#close no-violation\r\n"
    ).encode()
    store(gw, raw, "alice@example.org", (address,))
    run(gw)
    assert case(gw).status == "new"
    assert mails(gw, "result") == []
    with gw.database.transaction() as session:
        actions = list(session.execute(select(AuditEvent.action)).scalars())
    assert "commands-applied" not in actions
    copy = mails(gw, "copy")[-1]
    assert b"#close no-violation" in (copy.raw or b"")  # filed as a stranger's correspondence


@pytest.mark.parametrize(
    ("reporter", "pasted"),
    [
        # Staff copies show the address as written, tag and all: what staff would paste.
        ("rita+cgw@example.net", "rita+cgw@example.net"),
        ("rita+cgw@example.net", "RITA+other@Example.NET"),
        ("rita@b\u00fccher.example", "rita@b\u00fccher.example"),
        ("rita@b\u00fccher.example", "rita@xn--bcher-kva.example"),
        ("rita@xn--bcher-kva.example", "rita@b\u00fccher.example"),
    ],
)
def test_an_anonymous_case_refuses_the_reporter_s_address_however_it_is_written(
    gw: Gateway,  # noqa: F811
    reporter: str,
    pasted: str,
) -> None:
    """SPEC section 5: refused if the text contains the reporter's address; the address
    is found and normalised as recusal finds it, and compared as written too."""
    raw = REPORT.replace(b"c-rep1", b"c-rep-w").replace(
        b"Rita Reporter <rita@example.net>", reporter.encode()
    )
    store(gw, raw, None, ("conduct@example.org",))
    run(gw)
    command(gw, "#accused mallory@example.com\r\n", case=2)
    command(gw, f"#notify-accused\r\nThe complaint came from {pasted}.\r\n", case=2)
    assert "anonymous" in last_result(gw)
    command(gw, f"#to mallory@example.com\r\nAsk {pasted} about it.\r\n", case=2)
    assert "anonymous" in last_result(gw)
    assert mails(gw, "reply") == []
    assert case(gw, 2).accused_notified_at is None


@pytest.mark.parametrize(
    "party", ["#accused carol@example.org", "#participant carol@example.org witness"]
)
def test_a_party_to_a_case_who_joins_the_staff_is_kept_out_of_it(
    gw: Gateway,  # noqa: F811
    party: str,
) -> None:
    """SPEC section 5: the reporter's identity is never given to the accused, and notes go
    to the other staff, never anyone else. Carol, the case's accused (or witness), joins
    the staff: on this case she is kept out as a recused member is."""
    command(gw, f"{party}\r\n")
    reconfigure(gw, NEW_STAFF)
    mark = len(mails(gw))
    to = signed(gw, 1, "rita@example.net")
    more = REPORT.replace(b"c-rep1", b"c-rep1c").replace(
        b"To: conduct@example.org", b"To: " + to.encode()
    )
    store(gw, more, "rita@example.net", (to,))
    run(gw)
    command(gw, "#status investigating\r\nCarol's manager should hear of this.\r\n")
    # Her own token, as the accused's reply address, commands nothing.
    command(gw, "#anonymous off\r\n#status resolved\r\n", sender="carol@example.org")
    assert (case(gw).status, case(gw).anonymous) == ("investigating", True)
    with gw.database.transaction() as session:
        [refusal] = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "command-refused")
        ).scalars()
    assert '"party-to-case"' in (refusal or "")
    Jobs(lambda: gw.settings, gw.database, gw.secrets).tick(gw.now() + timedelta(days=8))
    assert [m.kind for m in mails(gw)[mark:] if m.recipient == "carol@example.org"] == []
    Jobs(lambda: gw.settings, gw.database, gw.secrets).digest(gw.now())
    [digest] = [m for m in mails(gw)[mark:] if m.recipient == "carol@example.org"]
    text = email.message_from_bytes(digest.raw or b"", policy=email.policy.default)
    body = text.get_body(("plain",))
    assert body is not None
    assert "#1 " not in body.get_content()
    assert "Harassment" not in body.get_content()


def test_a_party_to_a_case_who_joins_the_staff_cannot_merge_it_nor_be_merged_in(
    gw: Gateway,  # noqa: F811
) -> None:
    command(gw, "#accused carol@example.org\r\n")
    reconfigure(gw, NEW_STAFF)
    second_case(gw)  # Carol is its staff member from the start
    command(gw, "#merge 1\r\n", sender="carol@example.org", case=2)
    assert case(gw, 1).merged_into is None
    assert "Nothing was changed" in last_result(gw)
    # Merged by someone else, the case keeps her its accused, not its staff member.
    command(gw, "#merge 1\r\n", case=2)
    assert case(gw, 1).merged_into == 2
    assert participants(gw, 2)["carol@example.org"].role == "accused"
    mark = len(mails(gw))
    to = signed(gw, 1, "rita@example.net")
    more = REPORT.replace(b"c-rep1", b"c-rep1d").replace(
        b"To: conduct@example.org", b"To: " + to.encode()
    )
    store(gw, more, "rita@example.net", (to,))
    run(gw)
    assert sorted(m.recipient for m in mails(gw)[mark:]) == ["alice@example.org", "bob@example.org"]


def test_a_bounce_of_mail_sent_by_staff_who_left_is_told_to_the_current_staff(
    gw: Gateway,  # noqa: F811
) -> None:
    from tests.gateway.test_pipeline import dsn

    command(gw, "#reply\r\nThank you, we are looking into it.\r\n", sender="bob@example.org")
    [reply] = mails(gw, "reply")
    reconfigure(gw, "Alice Example <alice@example.org>")
    store(gw, dsn(reply.envelope_sender), None, (reply.envelope_sender,))
    run(gw)
    assert [m.recipient for m in mails(gw, "bounce-notice")] == ["alice@example.org"]
