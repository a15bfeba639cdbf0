"""Per-list verdicts: reject refuses the whole message, hold and discard spare the other lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.list_posts import ListTarget, NoContact, decide
from handlers.outcome import Verdict
from rules.bans import Ban, BanIndex, parse_pattern
from rules.list_identities import Identities

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEV = ListTarget("dev@lists.example.org", "dev@lists.example.org", True)
ANNOUNCE = ListTarget("announce@lists.example.org", "announce@lists.example.org", True)
LEAVE = ListTarget("dev@lists.example.org", "dev-leave@lists.example.org", False)


def ban(
    n: int, pattern: str, list_address: str | None = None, expires_at: datetime | None = None
) -> Ban:
    return Ban(
        n, parse_pattern(pattern), list_address, "reason", "alice@example.org", NOW, expires_at
    )


def post(
    from_: str = "poster@example.com",
    sender: tuple[str, ...] = (),
    to_cc: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
) -> Identities:
    return Identities((from_,), sender, "m@x", references, to_cc)


def run(
    index: BanIndex,
    found: Identities,
    targets: tuple[ListTarget, ...],
    action: str = "reject",
    envelope: str = "poster@example.com",
    no_contact: NoContact | None = None,
):  # type: ignore[no-untyped-def]
    return decide(
        envelope_sender=envelope,
        found=found,
        targets=targets,
        ban_action=action,
        lookup=index.match,
        no_contact=no_contact or NoContact(),
        now=NOW,
        zone=UTC,
    )


def test_a_permitted_post_is_accepted_for_every_list() -> None:
    decision = run(BanIndex([]), post(), (DEV, ANNOUNCE))
    assert decision.reply is None
    assert [v.verdict for v in decision.verdicts] == [Verdict.ACCEPT, Verdict.ACCEPT]


def test_a_from_ban_records_the_identity_and_refuses_with_fixed_text() -> None:
    decision = run(BanIndex([ban(1, "poster@example.com")]), post(), (DEV,), envelope="x@y.org")
    assert decision.reply == "550 5.7.1 Posting to dev@lists.example.org is not permitted"
    assert decision.verdicts[0].hits[0].identity == "from"
    assert "reason" not in (decision.reply or "")


def test_a_sender_ban_is_a_hit_but_reply_to_never_is() -> None:
    decision = run(
        BanIndex([ban(1, "*@bad.example")]), post(sender=("bot@bad.example",)), (DEV,), envelope=""
    )
    assert decision.verdicts[0].hits[0].identity == "sender"


def test_with_reject_a_ban_on_one_list_refuses_the_whole_message_naming_it() -> None:
    decision = run(
        BanIndex([ban(1, "poster@example.com", ANNOUNCE.list_address)]), post(), (DEV, ANNOUNCE)
    )
    assert decision.reply == "550 5.7.1 Posting to announce@lists.example.org is not permitted"


def test_with_hold_or_discard_the_other_lists_get_the_post() -> None:
    index = BanIndex([ban(1, "poster@example.com", ANNOUNCE.list_address)])
    for action, verdict in (("hold", Verdict.HOLD), ("discard", Verdict.DISCARD)):
        decision = run(index, post(), (DEV, ANNOUNCE), action=action)
        assert decision.reply is None
        assert [v.verdict for v in decision.verdicts] == [Verdict.ACCEPT, verdict]


def test_a_timed_ban_names_its_end_and_a_lapsed_one_does_not_match() -> None:
    end = NOW + timedelta(days=3)
    decision = run(BanIndex([ban(1, "poster@example.com", expires_at=end)]), post(), (DEV,))
    assert decision.reply == (
        "550 5.7.1 Posting to dev@lists.example.org is not permitted until 2026-11-28 12:00 UTC"
    )
    lapsed = run(BanIndex([ban(1, "poster@example.com", expires_at=NOW)]), post(), (DEV,))
    assert lapsed.reply is None


def test_bans_do_not_apply_to_leave_addresses() -> None:
    decision = run(BanIndex([ban(1, "poster@example.com")]), post(), (LEAVE,))
    assert decision.reply is None
    assert decision.verdicts[0].verdict is Verdict.ACCEPT


def test_no_contact_holds_a_reply_to_the_reporter_s_post() -> None:
    no_contact = NoContact(
        {"poster@example.com": frozenset({"reporter@example.net"})},
        {"p1@x": "reporter@example.net"},
    )
    decision = run(BanIndex([]), post(references=("p1@x",)), (DEV,), no_contact=no_contact)
    assert decision.verdicts[0].verdict is Verdict.HOLD
    assert decision.verdicts[0].rule == "no-contact"
    assert decision.verdicts[0].accused == "poster@example.com"  # finds the hold's case
    assert decision.reply is None


def test_no_contact_holds_a_post_naming_the_target_in_cc() -> None:
    no_contact = NoContact({"poster@example.com": frozenset({"target@example.net"})})
    decision = run(BanIndex([]), post(to_cc=("target@example.net",)), (DEV,), no_contact=no_contact)
    assert decision.verdicts[0].verdict is Verdict.HOLD
    assert decision.verdicts[0].accused == "poster@example.com"


def test_no_contact_lets_unrelated_posts_through() -> None:
    no_contact = NoContact(
        {"poster@example.com": frozenset({"reporter@example.net"})}, {"p1@x": "someone@example.org"}
    )
    decision = run(BanIndex([]), post(references=("p1@x",)), (DEV,), no_contact=no_contact)
    assert decision.verdicts[0].verdict is Verdict.ACCEPT
    assert decision.verdicts[0].accused is None
