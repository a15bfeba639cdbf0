"""conduct+moderate@: confirmations, moderators' limits, replays, expiry, #on-behalf."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from gateway.pipeline import Pipeline
from storage import inbox
from storage.models import BanRow, Case, Confirmation, OutboxEntry, Participant
from tests.gateway.gateway_setup import Gateway, make_gateway

MODERATE = "conduct+moderate@example.org"
EXTRA = "[moderators]\ndev@lists.example.org = carol@example.org\n"


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url, extra=EXTRA)
    yield gateway
    gateway.database.dispose()


counter = iter(range(1, 100000))


def send(gw: Gateway, sender: str, to: str, body: str, headers: str = "") -> None:
    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: moderation\r\n{headers}"
        f"Message-ID: <mod{next(counter)}@example.org>\r\n\r\n{body}"
    ).encode()
    with gw.database.transaction() as session:
        inbox.store(
            session, raw=raw, envelope_sender=sender, recipients=(to,), source="smtp", now=gw.now()
        )
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def outbox_rows(gw: Gateway) -> list[OutboxEntry]:
    with gw.database.transaction() as session:
        return list(session.execute(select(OutboxEntry).order_by(OutboxEntry.id)).scalars())


def confirm_address(row: OutboxEntry) -> str:
    message = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
    reply_to = str(message["Reply-To"])
    assert reply_to.startswith("conduct+confirm-")
    return reply_to


def bans(gw: Gateway) -> list[BanRow]:
    with gw.database.transaction() as session:
        return list(session.execute(select(BanRow)).scalars())


def cases(gw: Gateway) -> list[Case]:
    with gw.database.transaction() as session:
        return list(session.execute(select(Case)).scalars())


def test_a_moderator_s_ban_runs_only_after_confirmation(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    assert bans(gw) == []
    [ask] = outbox_rows(gw)
    assert ask.recipient == "carol@example.org"
    assert ask.envelope_sender == ""
    assert b"#ban spammer@bad.example" in (ask.raw or b"")
    send(gw, "carol@example.org", confirm_address(ask), "yes\r\n")
    [ban] = bans(gw)
    assert ban.pattern == "spammer@bad.example"
    assert ban.list == "dev@lists.example.org"  # no list=: the moderator's own lists
    assert ban.created_by == "carol@example.org"


def test_a_replayed_confirmation_runs_nothing_and_reveals_nothing(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    address = confirm_address(outbox_rows(gw)[0])
    send(gw, "carol@example.org", address, "yes\r\n")
    send(gw, "carol@example.org", address, "yes again\r\n")
    assert len(bans(gw)) == 1
    # The replay is plain conduct mail: a report by carol, no mention of confirmations.
    assert len(cases(gw)) == 1


def test_an_expired_confirmation_is_plain_conduct_mail(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    address = confirm_address(outbox_rows(gw)[0])
    with gw.database.transaction() as session:
        session.execute(update(Confirmation).values(expires_at=gw.now() - timedelta(seconds=1)))
    send(gw, "carol@example.org", address, "yes\r\n")
    assert bans(gw) == []
    assert len(cases(gw)) == 1


def test_a_confirmation_from_someone_else_confirms_nothing(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    address = confirm_address(outbox_rows(gw)[0])
    send(gw, "mallory@example.com", address, "yes\r\n")
    assert bans(gw) == []


def test_an_automatic_reply_never_confirms(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    address = confirm_address(outbox_rows(gw)[0])
    send(gw, "carol@example.org", address, "I am away\r\n", "Auto-Submitted: auto-replied\r\n")
    assert bans(gw) == []


def test_a_moderator_may_not_ban_outside_their_list_or_everywhere(gw: Gateway) -> None:
    send(
        gw,
        "carol@example.org",
        MODERATE,
        "#ban spammer@bad.example list=announce@lists.example.org\r\n",
    )
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example list=all\r\n")
    send(gw, "carol@example.org", MODERATE, "#status resolved\r\n")
    rows = outbox_rows(gw)
    assert len(rows) == 3
    assert all(b"Nothing was done" in (r.raw or b"") for r in rows)
    assert all(b"conduct+confirm-" not in (r.raw or b"") for r in rows)


def test_strangers_get_no_confirmation_and_no_reply(gw: Gateway) -> None:
    send(gw, "mallory@example.com", MODERATE, "#ban carol@example.org\r\n")
    assert outbox_rows(gw) == []
    assert cases(gw) == []


def test_staff_may_ban_everywhere_and_report_on_someone_s_behalf(gw: Gateway) -> None:
    send(
        gw,
        "alice@example.org",
        MODERATE,
        "#on-behalf victim@example.net\r\n#ack\r\nThey told me at the venue that someone "
        "kept following them.\r\n",
    )
    address = confirm_address(outbox_rows(gw)[0])
    send(gw, "alice@example.org", address, "confirmed\r\n")
    [case] = cases(gw)
    with gw.database.transaction() as session:
        roles = {p.address: p.role for p in session.execute(select(Participant)).scalars()}
    assert roles["victim@example.net"] == "reporter"
    kinds = [(r.kind, r.recipient) for r in outbox_rows(gw)]
    assert ("acknowledgement", "victim@example.net") in kinds
    assert ("copy", "bob@example.org") in kinds
    assert case.number == 1


def hold_post(gw: Gateway, list_address: str = "dev@lists.example.org") -> int:
    from storage import held

    with gw.database.transaction() as session:
        return held.hold(
            session,
            list_address=list_address,
            sender="spammer@bad.example",
            subject="buy",
            reason="ban",
            ban_id=None,
            case=None,
            envelope_sender="spammer@bad.example",
            envelope_recipients=(list_address,),
            raw=b"From: spammer@bad.example\r\nSubject: buy\r\n\r\nbuy now\r\n",
            now=gw.now(),
        )


def held_state(gw: Gateway, held_id: int) -> str:
    from storage.models import HeldPost

    with gw.database.transaction() as session:
        row = session.get(HeldPost, held_id)
        assert row is not None
        return row.state


def inbox_states(gw: Gateway) -> list[str]:
    from storage.models import InboxEntry

    with gw.database.transaction() as session:
        return [r.state for r in session.execute(select(InboxEntry)).scalars()]


def audit_actions(gw: Gateway) -> list[str]:
    from storage.models import AuditEvent

    with gw.database.transaction() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def confirmed(gw: Gateway, sender: str, body: str) -> str:
    """Send `body` to the moderation address, confirm it; returns the confirmation address."""
    send(gw, sender, MODERATE, body)
    address = confirm_address(outbox_rows(gw)[-1])
    send(gw, sender, address, "yes\r\n")
    return address


def last_text(gw: Gateway) -> str:
    row = outbox_rows(gw)[-1]
    message = email.message_from_bytes(row.raw or b"", policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize("verb", ["release", "discard"])
def test_a_moderator_releases_or_discards_a_held_post_by_email(gw: Gateway, verb: str) -> None:
    held_id = hold_post(gw)
    confirmed(gw, "carol@example.org", f"#{verb} {held_id}\r\n")
    assert held_state(gw, held_id) == ("released" if verb == "release" else "discarded")
    assert "Done" in last_text(gw)


@pytest.mark.parametrize(
    "body",
    [
        "#release 999\r\n",
        "#discard 999\r\n",
        "#release {other}\r\n",  # a post on a list carol does not moderate
        "#unban nobody@bad.example\r\n",
        "#unban 4242\r\n",
        "#ban spammer@bad.example\r\n",  # already banned
    ],
)
def test_a_confirmation_the_database_refuses_is_answered_and_used_up(
    gw: Gateway, body: str
) -> None:
    """Nothing is done, the moderator is told which line, the refusal is audited, the
    confirmation cannot be replayed and the message is not quarantined."""
    other = hold_post(gw, "announce@lists.example.org")
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    send(gw, "carol@example.org", confirm_address(outbox_rows(gw)[-1]), "yes\r\n")
    address = confirmed(gw, "carol@example.org", body.format(other=other))
    assert inbox_states(gw) == ["done"] * 4
    assert len(bans(gw)) == 1
    assert held_state(gw, other) == "held"
    text = last_text(gw)
    assert "Nothing was done: line 1 cannot apply." in text
    assert outbox_rows(gw)[-1].recipient == "carol@example.org"
    assert audit_actions(gw)[-1] == "commands-refused"
    send(gw, "carol@example.org", address, "yes again\r\n")  # a replay: plain conduct mail
    assert len(cases(gw)) == 1


def test_a_moderator_s_unban_without_list_lifts_the_ban_on_their_own_lists(gw: Gateway) -> None:
    confirmed(gw, "carol@example.org", "#ban spammer@bad.example\r\n")
    [ban] = bans(gw)
    assert ban.list == "dev@lists.example.org"
    confirmed(gw, "carol@example.org", "#unban Spammer+x@bad.example\r\n")
    [ban] = bans(gw)
    assert ban.lifted_at is not None
    assert ban.lifted_by == "carol@example.org"
    assert "Done" in last_text(gw)


def test_a_moderator_cannot_unban_a_ban_on_every_list(gw: Gateway) -> None:
    confirmed(gw, "alice@example.org", "#ban spammer@bad.example\r\n")  # staff: all lists
    confirmed(gw, "carol@example.org", "#unban spammer@bad.example\r\n")
    [ban] = bans(gw)
    assert ban.lifted_at is None
    assert "Nothing was done" in last_text(gw)


ON_BEHALF = (
    "#on-behalf Victim+conduct@example.net\r\n{ack}"
    "They told me at the venue that someone kept following them.\r\n"
    "\r\n"
    "---------- Forwarded message ---------\r\n"
    "From: Victim <victim@example.net>\r\n"
    "Date: Mon, 2 Mar 2026 10:00:00 +0100\r\n"
    "Subject: what happened on Saturday\r\n"
    "To: Alice <alice@example.org>\r\n"
    "\r\n"
    "> He followed me from the venue to my hotel.\r\n"
    "-- \r\n"
    "Alice Example, conduct team\r\n"
)


def on_behalf(gw: Gateway, ack: bool) -> None:
    body = ON_BEHALF.format(ack="#ack\r\n" if ack else "")
    raw = (
        f"From: Alice Example <alice@example.org>\r\nTo: {MODERATE}\r\n"
        "Subject: Following at the meetup\r\nMessage-ID: <req-1@example.org>\r\n\r\n" + body
    ).encode()
    with gw.database.transaction() as session:
        inbox.store(
            session,
            raw=raw,
            envelope_sender="alice@example.org",
            recipients=(MODERATE,),
            source="smtp",
            now=gw.now(),
        )
    Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now).process_batch()
    address = confirm_address(outbox_rows(gw)[-1])
    reply = (
        f"From: alice@example.org\r\nTo: {address}\r\nSubject: Re: Please confirm\r\n"
        "In-Reply-To: <req-1@example.org>\r\nMessage-ID: <yes-1@example.org>\r\n\r\nyes\r\n"
    ).encode()
    with gw.database.transaction() as session:
        inbox.store(
            session,
            raw=reply,
            envelope_sender="alice@example.org",
            recipients=(address,),
            source="smtp",
            now=gw.now(),
        )
    Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now).process_batch()


def test_on_behalf_files_the_request_s_text_and_subject_as_the_report(gw: Gateway) -> None:
    from storage.models import Message

    on_behalf(gw, ack=False)
    [case] = cases(gw)
    assert case.subject == "Following at the meetup"
    with gw.database.transaction() as session:
        roles = {p.address: p.role for p in session.execute(select(Participant)).scalars()}
        [report] = session.execute(
            select(Message).where(Message.case_number == case.number, Message.kind == "report")
        ).scalars()
        filed = session.execute(select(Message).where(Message.case_number == case.number))
        texts = [m.text or "" for m in filed.scalars()]
    assert roles["victim@example.net"] == "reporter"
    assert report.subject == "Following at the meetup"
    assert "kept following them" in (report.text or "")
    assert "He followed me from the venue to my hotel." in (report.text or "")
    assert all(t.strip() != "yes" for t in texts)  # the confirmation is not the report
    [copy] = [r for r in outbox_rows(gw) if r.kind == "copy" and r.recipient == "bob@example.org"]
    message = email.message_from_bytes(copy.raw or b"", policy=email.policy.default)
    assert message["Subject"] == f"[Conduct #{case.number}] Following at the meetup"
    assert b"He followed me from the venue to my hotel." in (copy.raw or b"")
    assert b"Message-ID: <req-1@example.org>" in (copy.raw or b"")  # the request attached
    assert b"<yes-1@example.org>" not in (copy.raw or b"").split(b"\r\n\r\n", 1)[1]
    # Without #ack the reporter gets nothing.
    assert [r for r in outbox_rows(gw) if "victim" in r.recipient] == []


def test_on_behalf_with_ack_acknowledges_the_reporter_without_the_staff_thread(
    gw: Gateway,
) -> None:
    on_behalf(gw, ack=True)
    [ack] = [r for r in outbox_rows(gw) if r.kind == "acknowledgement"]
    assert ack.recipient == "Victim+conduct@example.net"
    raw = (ack.raw or b"").lower()
    for trace in (b"req-1@example.org", b"yes-1@example.org", b"alice"):
        assert trace not in raw, trace


def test_on_behalf_acknowledgements_count_against_the_reporter_s_limit(gw: Gateway) -> None:
    for n in range(5):
        send(gw, "victim@example.net", "conduct@example.org", f"report {n}\r\n")
    assert len([r for r in outbox_rows(gw) if r.kind == "acknowledgement"]) == 5
    on_behalf(gw, ack=True)
    assert len([r for r in outbox_rows(gw) if r.kind == "acknowledgement"]) == 5
    assert len(cases(gw)) == 6


def test_a_moderator_s_refused_request_is_answered_and_audited(gw: Gateway) -> None:
    send(gw, "carol@example.org", MODERATE, "#ban spammer@bad.example list=all\r\n")
    assert "Nothing was done" in last_text(gw)
    assert audit_actions(gw)[-1] == "commands-refused"


@pytest.fixture
def strict(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """require_dkim = yes; the test answers the DNS lookups itself (no network)."""
    from gateway import dkim_check
    from tests.dkim_keys import key_dns, make_key

    real = dkim_check.verify_aligned
    dns = key_dns({"s1._domainkey.example.org": make_key("example.org").txt})
    monkeypatch.setattr(
        dkim_check,
        "verify_aligned",
        lambda raw, domain, dnsfunc=None: real(raw, domain, dnsfunc=dns),
    )
    gateway = make_gateway(tmp_path, database_url, extra=EXTRA, require_dkim="yes")
    yield gateway
    gateway.database.dispose()


def send_signed(gw: Gateway, sender: str, to: str, body: str) -> None:
    from tests.dkim_keys import make_key, sign_for_tests

    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: moderation\r\n"
        f"Message-ID: <mods{next(counter)}@example.org>\r\n\r\n{body}"
    ).encode()
    raw = sign_for_tests(raw, "example.org", "s1", make_key("example.org").private_pem)
    with gw.database.transaction() as session:
        inbox.store(
            session, raw=raw, envelope_sender=sender, recipients=(to,), source="smtp", now=gw.now()
        )
    Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now).process_batch()


def test_with_dkim_required_an_unsigned_request_gets_no_confirmation(strict: Gateway) -> None:
    send(strict, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    assert outbox_rows(strict) == []
    assert audit_actions(strict)[-1] == "moderation-refused"


def test_with_dkim_required_an_unsigned_confirmation_runs_nothing(strict: Gateway) -> None:
    send_signed(strict, "carol@example.org", MODERATE, "#ban spammer@bad.example\r\n")
    address = confirm_address(outbox_rows(strict)[-1])
    send(strict, "carol@example.org", address, "yes\r\n")
    assert bans(strict) == []
    assert len(outbox_rows(strict)) == 1  # no reply to the unsigned confirmation
    send_signed(strict, "carol@example.org", address, "yes\r\n")  # still pending: runs
    [ban] = bans(strict)
    assert ban.list == "dev@lists.example.org"
