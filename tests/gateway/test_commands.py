"""Staff commands by email through the real pipeline: each command, refusals, the spoof matrix."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.pipeline import Pipeline
from rules.tokens import reply_token
from storage import audit, inbox
from storage.models import AuditEvent, BanRow, Case, OutboxEntry, Participant, Sanction, Timer
from tests.gateway.gateway_setup import Gateway, make_gateway

REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <c-rep1@example.net>\r\n\r\n"
    b"Mallory was rude to me after the talk.\r\n"
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    store(gateway, REPORT, "rita@example.net", ("conduct@example.org",))
    run(gateway)
    yield gateway
    gateway.database.dispose()


def store(gw: Gateway, raw: bytes, sender: str | None, recipients: tuple[str, ...]) -> None:
    with gw.database.transaction() as session:
        inbox.store(
            session,
            raw=raw,
            envelope_sender=sender,
            recipients=recipients,
            source="smtp",
            now=gw.now(),
        )


def run(gw: Gateway) -> None:
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def signed(gw: Gateway, case: int, owner: str) -> str:
    return f"conduct+{case}-{reply_token(gw.secrets.current, case, owner)}@example.org"


counter = iter(range(1000, 100000))


def command(
    gw: Gateway,
    body: str,
    *,
    sender: str = "alice@example.org",
    to: str | None = None,
    case: int = 1,
    token_of: str | None = None,
) -> None:
    address = to or signed(gw, case, token_of or sender)
    raw = (
        f"From: {sender}\r\nTo: {address}\r\nSubject: Re: [Conduct #{case}] report\r\n"
        f"Message-ID: <cmd{next(counter)}@example.org>\r\n\r\n{body}"
    ).encode()
    store(gw, raw, sender, (address,))
    run(gw)


def mails(gw: Gateway, kind: str | None = None) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        rows = session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars().all()
    return [r for r in rows if kind is None or r.kind == kind]


def case(gw: Gateway, number: int = 1) -> Case:
    with gw.database.transaction() as session:
        row = session.get(Case, number)
        assert row is not None
        return row


def body_of(row: OutboxEntry) -> str:
    message = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def last_result(gw: Gateway) -> str:
    return body_of(mails(gw, "result")[-1])


def test_status_changes_and_the_result_goes_to_the_sender_with_null_envelope(
    gw: Gateway,
) -> None:
    command(gw, "#status investigating\r\n")
    assert case(gw).status == "investigating"
    [result] = mails(gw, "result")
    assert result.recipient == "alice@example.org"
    assert result.envelope_sender == ""
    assert "status new -> investigating" in body_of(result)
    notes = [m.recipient for m in mails(gw, "note")]
    assert notes == ["bob@example.org"]


def test_all_or_nothing_a_bad_third_line_changes_nothing(gw: Gateway) -> None:
    command(gw, "#status investigating\r\n#urgent\r\n#frobnicate now\r\n")
    row = case(gw)
    assert row.status == "new"
    assert not row.urgent
    assert "line 3" in last_result(gw)
    assert "Nothing was changed" in last_result(gw)


def test_reply_reaches_the_reporter_with_no_trace_of_the_staff_member(gw: Gateway) -> None:
    command(
        gw,
        "#reply\r\nThank you, we are looking into it.\r\n\r\n-- \r\nAlice Example\r\n"
        "Conduct team, alice@example.org\r\n",
    )
    [reply] = mails(gw, "reply")
    assert reply.recipient == "rita@example.net"
    raw = (reply.raw or b"").decode().lower()
    token = reply_token(gw.secrets.current, 1, "alice@example.org")
    for trace in ("alice", token, "bob"):
        assert trace not in raw, trace
    assert "thank you, we are looking into it." in raw
    message = email.message_from_bytes(reply.raw or b"", policy=email.policy.default)
    assert message["Reply-To"] == signed(gw, 1, "rita@example.net")
    assert message["Subject"] == "[Conduct #1] A message from the Conduct team"
    assert "Thank you, we are looking into it." in last_result(gw)


def test_notify_accused_is_refused_while_anonymous_if_it_names_the_reporter(
    gw: Gateway,
) -> None:
    command(
        gw,
        "#accused mallory@example.com\r\n#notify-accused\r\n"
        "Rita Reporter (rita@example.net) says you were rude.\r\n",
    )
    assert mails(gw, "reply") == []
    assert "anonymous" in last_result(gw)
    with gw.database.transaction() as session:
        roles = {p.address: p.role for p in session.execute(select(Participant)).scalars()}
    assert "mallory@example.com" not in roles  # all or nothing


def test_notify_accused_records_it_and_later_bans_are_not_interim(gw: Gateway) -> None:
    command(
        gw,
        "#accused mallory@example.com\r\n#notify-accused\r\nA report was made about "
        "your conduct at the meetup.\r\n",
    )
    assert case(gw).accused_notified_at is not None
    assert [m.recipient for m in mails(gw, "reply")] == ["mallory@example.com"]
    command(gw, '#ban mallory@example.com reason="harassment"\r\n')
    with gw.database.transaction() as session:
        [ban] = session.execute(select(BanRow)).scalars().all()
    assert not ban.interim
    assert ban.case_number == 1


def test_a_ban_before_notify_accused_is_interim_and_the_result_says_so(gw: Gateway) -> None:
    command(gw, "#ban mallory@example.com list=dev@lists.example.org for=30d\r\n")
    with gw.database.transaction() as session:
        [ban] = session.execute(select(BanRow)).scalars().all()
        timers = session.execute(select(Timer)).scalars().all()
    assert ban.interim
    assert ban.list == "dev@lists.example.org"
    assert ban.expires_at is not None
    assert "interim" in last_result(gw)
    assert [t.kind for t in timers] == ["ban-end"]


@pytest.mark.parametrize(
    "pattern", ["alice@example.org", "*@example.org", "conduct@example.org", "re:.*@example\\.org"]
)
def test_a_ban_that_would_catch_staff_or_a_local_domain_is_refused(
    gw: Gateway, pattern: str
) -> None:
    command(gw, f"#ban {pattern}\r\n")
    with gw.database.transaction() as session:
        assert session.execute(select(BanRow)).scalars().all() == []
    assert "Nothing was changed" in last_result(gw)


def test_sanction_and_close_flagged_follow_the_procedure(gw: Gateway) -> None:
    command(gw, "#sanction warning\r\n")
    assert "#escalate and #notify-accused" in last_result(gw)
    command(gw, "#sanction no-contact for=90d\r\n")
    with gw.database.transaction() as session:
        assert [s.kind for s in session.execute(select(Sanction)).scalars()] == ["no-contact"]
    command(gw, "#close flagged\r\n")
    assert case(gw).status == "new"
    command(gw, "#accused mallory@example.com\r\n#escalate\r\n")
    assert case(gw).escalated_at is not None
    [summary] = [m for m in mails(gw, "notification") if m.recipient == "ed@example.org"]
    assert "Mallory was rude" in body_of(summary)
    command(gw, "#notify-accused\r\nA report was made about you.\r\n")
    command(gw, "#sanction warning\r\n#close flagged serious\r\n")
    row = case(gw)
    assert row.status == "closed"
    assert row.outcome == "flagged"
    assert row.expunge_at is not None


def test_the_director_may_command_only_once_escalated(gw: Gateway) -> None:
    with gw.database.transaction() as session:
        session.add(
            Participant(
                case_number=1,
                address="ed@example.org",
                written="ed@example.org",
                name="",
                role="director",
                recused=False,
                added_at=gw.now(),
            )
        )
    command(gw, "#status investigating\r\n", sender="ed@example.org")
    assert case(gw).status == "new"
    assert mails(gw, "result") == []  # refused silently
    command(gw, "#escalate\r\n")
    command(gw, "#status investigating\r\n", sender="ed@example.org")
    assert case(gw).status == "investigating"


@pytest.mark.parametrize(
    ("sender", "token_of", "to"),
    [
        ("alice@example.org", None, "conduct+1@example.org"),  # no token
        ("alice@example.org", "bob@example.org", None),  # another staff member's token
        ("alice@example.org", "rita@example.net", None),  # the reporter's token
    ],
)
def test_forged_commands_change_nothing_and_get_no_reply(
    gw: Gateway, sender: str, token_of: str | None, to: str | None
) -> None:
    before = len(mails(gw))
    command(gw, "#status resolved\r\n#urgent\r\n", sender=sender, token_of=token_of, to=to)
    row = case(gw)
    assert row.status == "new"
    assert not row.urgent
    assert len(mails(gw)) == before
    with gw.database.transaction() as session:
        actions = [e.action for e in session.execute(select(AuditEvent)).scalars()]
    assert "command-refused" in actions


def test_another_case_s_token_does_not_command_this_case(gw: Gateway) -> None:
    store(gw, REPORT.replace(b"c-rep1", b"c-rep2"), "rita@example.net", ("conduct@example.org",))
    run(gw)
    command(gw, "#status resolved\r\n", to=signed(gw, 2, "alice@example.org"), case=1)
    assert case(gw, 1).status == "new"
    assert case(gw, 2).status == "resolved"  # it commanded case 2, whose token it was


def test_a_reporter_s_hash_lines_are_correspondence_not_commands(gw: Gateway) -> None:
    command(gw, "#status resolved\r\nI would like this closed.\r\n", sender="rita@example.net")
    assert case(gw).status == "new"
    assert {m.recipient for m in mails(gw, "copy")[-2:]} == {"alice@example.org", "bob@example.org"}


def test_recused_staff_get_nothing_more_and_cannot_command(gw: Gateway) -> None:
    command(gw, "#recuse\r\n", sender="bob@example.org")
    before = [m.id for m in mails(gw) if m.recipient == "bob@example.org"]
    command(gw, "#status investigating\r\nNote for the team.\r\n")
    after = [m.id for m in mails(gw) if m.recipient == "bob@example.org"]
    assert after == before
    command(gw, "#status waiting\r\n", sender="bob@example.org")
    assert case(gw).status == "investigating"


def test_unknown_held_post_or_ban_refuses_the_whole_message(gw: Gateway) -> None:
    command(gw, "#status investigating\r\n#release 999\r\n")
    assert case(gw).status == "new"
    assert "no held post 999" in last_result(gw)
    command(gw, "#status investigating\r\n#unban 12345\r\n")
    assert case(gw).status == "new"
    assert "no such ban" in last_result(gw)


def test_merge_folds_the_other_case_in(gw: Gateway) -> None:
    store(
        gw,
        REPORT.replace(b"c-rep1", b"c-rep3").replace(b"rita@", b"wendy@"),
        "wendy@example.net",
        ("conduct@example.org",),
    )
    run(gw)
    command(gw, "#merge 2\r\n")
    row = case(gw, 2)
    assert row.merged_into == 1
    assert row.status == "closed"
    with gw.database.transaction() as session:
        people = {
            p.address
            for p in session.execute(
                select(Participant).where(Participant.case_number == 1)
            ).scalars()
        }
    assert "wendy@example.net" in people


def test_remind_and_status_reopen(gw: Gateway) -> None:
    command(gw, "#remind 2d check back\r\n#close no-violation\r\n")
    row = case(gw)
    assert row.status == "closed"
    command(gw, "#status investigating\r\n")
    row = case(gw)
    assert row.status == "investigating"
    assert row.expunge_at is None
    with gw.database.transaction() as session:
        [timer] = session.execute(select(Timer)).scalars().all()
    assert timer.recipient == "alice@example.org"


def test_assign_refuses_a_staff_member_kept_out_of_the_case(gw: Gateway) -> None:
    command(gw, "#recuse\r\n", sender="bob@example.org")
    command(gw, "#assign bob@example.org\r\n")
    assert case(gw).assignee is None
    assert "kept out of this case" in last_result(gw)
    command(gw, "#assign me\r\n")
    assert case(gw).assignee == "alice@example.org"


def test_every_command_leaves_an_audit_chain_that_verifies(gw: Gateway) -> None:
    command(gw, "#status investigating\r\n#assign me\r\n#urgent\r\n")
    assert case(gw).assignee == "alice@example.org"
    with gw.database.transaction() as session:
        assert audit.verify_chain(session).problem is None


@pytest.fixture
def strict(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Gateway]:
    """require_dkim = yes; the test answers the DNS lookups itself (no network)."""
    from gateway import dkim_check
    from tests.dkim_keys import key_dns, make_key

    key = make_key("example.org")
    real = dkim_check.verify_aligned
    dns = key_dns({"s1._domainkey.example.org": key.txt})
    monkeypatch.setattr(
        dkim_check,
        "verify_aligned",
        lambda raw, domain, dnsfunc=None: real(raw, domain, dnsfunc=dns),
    )
    gateway = make_gateway(tmp_path, database_url, require_dkim="yes")
    store(gateway, REPORT, "rita@example.net", ("conduct@example.org",))
    run(gateway)
    yield gateway
    gateway.database.dispose()


def signed_command(
    gw: Gateway, body: str, *, domain: str = "example.org", length: bool = False, appended: str = ""
) -> None:
    from tests.dkim_keys import make_key, sign_for_tests

    address = signed(gw, 1, "alice@example.org")
    raw = (
        f"From: alice@example.org\r\nTo: {address}\r\nSubject: Re: report\r\n"
        f"Message-ID: <dk{next(counter)}@example.org>\r\n\r\n{body}"
    ).encode()
    raw = sign_for_tests(raw, domain, "s1", make_key(domain).private_pem, length=length)
    store(gw, raw + appended.encode(), "alice@example.org", (address,))
    run(gw)


def test_with_dkim_required_an_aligned_signature_lets_the_command_run(strict: Gateway) -> None:
    signed_command(strict, "#status investigating\r\n")
    assert case(strict).status == "investigating"


def test_with_dkim_required_an_unsigned_command_changes_nothing(strict: Gateway) -> None:
    command(strict, "#status investigating\r\n")
    assert case(strict).status == "new"
    assert mails(strict, "result") == []


def test_with_dkim_required_a_signature_by_another_domain_does_not_count(
    strict: Gateway,
) -> None:
    signed_command(strict, "#status investigating\r\n", domain="elsewhere.example")
    assert case(strict).status == "new"


def test_with_dkim_required_l_shorter_than_the_body_does_not_count(strict: Gateway) -> None:
    """The signed part is itself a command; a line appended after signing (outside l=) must
    not ride on it: nothing of the message applies."""
    signed_command(
        strict, "#status investigating\r\n", length=True, appended="#close no-violation\r\n"
    )
    row = case(strict)
    assert row.status == "new"
    assert row.closed_at is None
    assert mails(strict, "result") == []


def test_with_dkim_required_l_covering_the_whole_body_counts(strict: Gateway) -> None:
    signed_command(strict, "#status investigating\r\n", length=True)
    assert case(strict).status == "investigating"


@pytest.mark.parametrize(
    "address", ["alice+x@example.org", "prvs=0123abcd=alice@Example.ORG", "ED+cc@example.org"]
)
def test_accused_given_with_a_tag_is_still_recognised_as_staff(gw: Gateway, address: str) -> None:
    command(gw, f"#accused {address}\r\n")
    with gw.database.transaction() as session:
        roles = [p.role for p in session.execute(select(Participant)).scalars()]
    assert "accused" not in roles
    assert "is staff or the gateway itself" in last_result(gw)


def test_to_the_accused_is_refused_while_anonymous_if_it_names_the_reporter(gw: Gateway) -> None:
    command(gw, "#accused mallory@example.com\r\n")
    command(gw, "#to mallory@example.com\r\nRita (rita@example.net) reported you.\r\n")
    assert mails(gw, "reply") == []
    assert "anonymous" in last_result(gw)
    command(gw, "#to mallory@example.com\r\nA report was made about your conduct.\r\n")
    assert [m.recipient for m in mails(gw, "reply")] == ["mallory@example.com"]


def test_to_a_witness_sends_the_text_and_the_witness_s_reply_joins_the_case(gw: Gateway) -> None:
    command(gw, "#participant Wendy+conduct@example.net witness\r\n")
    command(gw, "#to wendy@example.net\r\nCould you tell us what you saw?\r\n")
    [reply] = mails(gw, "reply")
    assert reply.recipient == "Wendy+conduct@example.net"  # where the witness asked mail to go
    assert "Could you tell us what you saw?" in body_of(reply)
    message = email.message_from_bytes(reply.raw or b"", policy=email.policy.default)
    reply_to = str(message["Reply-To"])
    assert reply_to == signed(gw, 1, "wendy@example.net")
    answer = (
        f"From: Wendy <wendy@example.net>\r\nTo: {reply_to}\r\nSubject: Re: hello\r\n"
        "Message-ID: <wendy1@example.net>\r\n\r\nI saw it happen.\r\n"
    ).encode()
    store(gw, answer, "wendy@example.net", (reply_to,))
    run(gw)
    assert len(cases_of(gw)) == 1
    copies = [m for m in mails(gw, "copy") if b"I saw it happen." in (m.raw or b"")]
    assert sorted(m.recipient for m in copies) == ["alice@example.org", "bob@example.org"]
    assert b"from the witness" in (copies[0].raw or b"")


def cases_of(gw: Gateway) -> list[Case]:
    with gw.database.transaction() as session:
        return list(session.execute(select(Case)).scalars())


def reconfigure(gw: Gateway, staff: str) -> None:
    """The operator edits `staff` (as a SIGHUP reload would apply it)."""
    from gateway import config

    text = gw.path.read_text(encoding="utf-8")
    old = "staff = Alice Example <alice@example.org>, bob@example.org\n"
    assert old in text
    gw.path.write_text(text.replace(old, f"staff = {staff}\n"), encoding="utf-8")
    gw.settings = config.load(gw.path)


def test_a_removed_staff_member_s_commands_are_refused_silently(gw: Gateway) -> None:
    """Still a participant with a valid token, but no longer staff: refused, recorded,
    no reply, and not forwarded to the team as an internal note either."""
    reconfigure(gw, "Alice Example <alice@example.org>")
    before = len(mails(gw))
    command(gw, "#status resolved\r\n#urgent\r\nClosing this.\r\n", sender="bob@example.org")
    row = case(gw)
    assert row.status == "new"
    assert not row.urgent
    assert len(mails(gw)) == before
    with gw.database.transaction() as session:
        [event] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "command-refused")
        ).scalars()
    assert event.actor == "bob@example.org"
    assert '"not-staff"' in (event.detail or "")


NEW_STAFF = "Alice Example <alice@example.org>, bob@example.org, Carol New <carol@example.org>"


def test_staff_added_after_the_case_opened_can_command_it(gw: Gateway) -> None:
    reconfigure(gw, NEW_STAFF)
    reply = REPORT.replace(b"c-rep1", b"c-rep1b").replace(b"Mallory was", b"Also, Mallory was")
    address = signed(gw, 1, "rita@example.net")
    store(
        gw, reply.replace(b"To: conduct@example.org", f"To: {address}".encode()), None, (address,)
    )
    run(gw)
    [copy] = [m for m in mails(gw, "copy") if m.recipient == "carol@example.org"]
    message = email.message_from_bytes(copy.raw or b"", policy=email.policy.default)
    assert message["Reply-To"] == signed(gw, 1, "carol@example.org")
    command(gw, "#status investigating\r\n", sender="carol@example.org")
    assert case(gw).status == "investigating"
    assert len(cases_of(gw)) == 1
    assert mails(gw, "result")[-1].recipient == "carol@example.org"
    command(gw, "#recuse\r\n", sender="carol@example.org")
    with gw.database.transaction() as session:
        carol = session.execute(
            select(Participant).where(Participant.address == "carol@example.org")
        ).scalar_one()
    assert (carol.role, carol.recused) == ("staff", True)
    command(gw, "#status waiting\r\n", sender="carol@example.org")
    assert case(gw).status == "investigating"  # recused: no longer commands it


def test_a_note_from_staff_added_after_the_case_opened_stays_with_staff(gw: Gateway) -> None:
    reconfigure(gw, NEW_STAFF)
    command(gw, "I know the people involved; more tomorrow.\r\n", sender="carol@example.org")
    assert len(cases_of(gw)) == 1
    notes = [m for m in mails(gw, "note") if b"more tomorrow" in (m.raw or b"")]
    assert sorted(m.recipient for m in notes) == ["alice@example.org", "bob@example.org"]
    assert [m for m in mails(gw) if m.recipient == "rita@example.net"][1:] == []


def second_case(gw: Gateway) -> None:
    """Case 2, reported by Wendy."""
    store(
        gw,
        REPORT.replace(b"c-rep1", b"c-rep3").replace(b"Rita Reporter <rita@", b"Wendy <wendy@"),
        "wendy@example.net",
        ("conduct@example.org",),
    )
    run(gw)


def participants(gw: Gateway, number: int) -> dict[str, Participant]:
    with gw.database.transaction() as session:
        rows = session.execute(select(Participant).where(Participant.case_number == number))
        return {p.address: p for p in rows.scalars()}


def test_merge_is_refused_when_the_sender_is_recused_on_the_other_case(gw: Gateway) -> None:
    second_case(gw)
    command(gw, "#recuse\r\n", case=2)
    command(gw, "#merge 2\r\n")
    assert case(gw, 2).merged_into is None
    assert "recused" in last_result(gw)
    assert participants(gw, 1)["alice@example.org"].recused is False


def test_merge_carries_recusals_into_the_target(gw: Gateway) -> None:
    second_case(gw)
    command(gw, "#recuse\r\n", sender="bob@example.org", case=2)
    command(gw, "#merge 2\r\n")
    assert case(gw, 2).merged_into == 1
    assert participants(gw, 1)["bob@example.org"].recused is True
    before = [m.id for m in mails(gw) if m.recipient == "bob@example.org"]
    address = signed(gw, 1, "rita@example.net")
    store(
        gw,
        b"From: rita@example.net\r\nTo: " + address.encode() + b"\r\nSubject: more\r\n"
        b"Message-ID: <more1@example.net>\r\n\r\nMore detail.\r\n",
        None,
        (address,),
    )
    run(gw)
    assert [m.id for m in mails(gw) if m.recipient == "bob@example.org"] == before


def test_mail_to_a_merged_case_s_addresses_reaches_the_target(gw: Gateway) -> None:
    second_case(gw)
    command(gw, "#merge 2\r\n")
    for n, to in enumerate((signed(gw, 2, "wendy@example.net"), "conduct+2@example.org")):
        raw = (
            f"From: Wendy <wendy@example.net>\r\nTo: {to}\r\nSubject: Re: my report\r\n"
            f"Message-ID: <w-more{n}@example.net>\r\n\r\nOne more thing {n}.\r\n"
        ).encode()
        store(gw, raw, "wendy@example.net", (to,))
        run(gw)
        assert len(cases_of(gw)) == 2
        copies = [m for m in mails(gw, "copy") if f"One more thing {n}.".encode() in (m.raw or b"")]
        assert sorted(m.recipient for m in copies) == ["alice@example.org", "bob@example.org"]
        assert {m.case_number for m in copies} == {1}
    # Staff replying to the merged case's copies command the target.
    command(gw, "#status investigating\r\n", case=2)
    assert case(gw, 1).status == "investigating"


def test_a_merged_case_is_expunged_with_its_target(gw: Gateway) -> None:
    second_case(gw)
    command(gw, "#merge 2\r\n")
    command(gw, "#close resolved\r\n")
    closed = case(gw, 1)
    assert closed.expunge_at is not None
    assert case(gw, 2).expunge_at == closed.expunge_at
    command(gw, "#status investigating\r\n")
    assert case(gw, 2).expunge_at is None


def test_the_result_mail_shows_exactly_the_text_that_went_out(gw: Gateway) -> None:
    """SPEC: the result mail shows exactly what went out, signature included."""
    command(gw, "#reply\r\nThank you, we are looking into it.\r\n")
    [reply] = mails(gw, "reply")
    sent = body_of(reply).rstrip("\n").splitlines()
    assert sent[-2:] == ["-- ", "The Conduct team"]
    result = last_result(gw)
    quoted = "\n".join(f"| {line}".rstrip() for line in sent)
    assert quoted in "\n".join(line.rstrip() for line in result.splitlines())


def test_the_escalation_summary_carries_the_case_s_dates(gw: Gateway) -> None:
    command(gw, "#escalate\r\n")
    [summary] = [m for m in mails(gw, "notification") if m.recipient == "ed@example.org"]
    text = body_of(summary)
    row = case(gw)
    assert row.escalated_at is not None
    for label in ("Opened:", "Last message:", "Escalated:"):
        assert label in text, label
    assert row.created_at.isoformat(timespec="minutes") in text
    assert row.escalated_at.isoformat(timespec="minutes") in text


def test_a_merged_case_goes_with_its_target_whatever_date_it_was_given(gw: Gateway) -> None:
    from storage import purge

    second_case(gw)
    command(gw, "#merge 2\r\n")
    command(gw, "#close no-violation\r\n")
    with gw.database.transaction() as session:
        merged, target = session.get(Case, 2), session.get(Case, 1)
        assert merged is not None
        assert target is not None
        merged.expunge_at = None  # as when only the target's date was moved on
        assert purge.due_cases(session, gw.now() + timedelta(days=1)) == [1, 2]
        target.purged_at = gw.now()
        assert purge.due_cases(session, gw.now() + timedelta(days=1)) == [2]
