"""The staff command grammar: each command, quoting, placement rules, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rules.command_types import (
    Accused,
    Ack,
    Anonymous,
    Assign,
    Ban,
    BanScope,
    Close,
    Command,
    Discard,
    Escalate,
    Merge,
    NotifyAccused,
    OnBehalf,
    Outcome,
    Participant,
    ParticipantRole,
    Recuse,
    Release,
    Remind,
    Reply,
    Sanction,
    SanctionKind,
    SettableStatus,
    Status,
    To,
    Unban,
    Urgent,
)
from rules.commands import (
    COMMAND_NAMES,
    CommandError,
    ParsedCommands,
    moderator_allowed,
    parse_commands,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Berlin")
SENDER = "bob@example.org"


def parse(text: str) -> ParsedCommands | CommandError:
    return parse_commands(text, sender=SENDER, tz=ZONE, now=NOW)


def ok(text: str) -> ParsedCommands:
    result = parse(text)
    assert isinstance(result, ParsedCommands), result
    return result


def one(line: str) -> Command:
    parsed = ok(line)
    assert len(parsed.commands) == 1
    return parsed.commands[0]


def refused(text: str) -> CommandError:
    result = parse(text)
    assert isinstance(result, CommandError), result
    return result


def test_text_without_command_lines_has_no_commands_and_keeps_the_text() -> None:
    parsed = ok("Hello staff,\n#status new is not a command here")
    assert parsed.commands == ()
    assert parsed.text == "Hello staff,\n#status new is not a command here"


def test_leading_blank_lines_and_blank_lines_between_commands_are_allowed() -> None:
    parsed = ok("\n\n#urgent\n\n#escalate\nnote text\n#status new")
    assert parsed.commands == (Urgent(on=True), Escalate())
    assert parsed.lines == ("#urgent", "#escalate")
    assert parsed.text == "note text\n#status new"


def test_command_names_are_case_insensitive() -> None:
    assert one("#STATUS Investigating") == Status(SettableStatus.INVESTIGATING)


@pytest.mark.parametrize("value", ["new", "investigating", "waiting", "resolved"])
def test_status_accepts_the_four_settable_statuses(value: str) -> None:
    assert one(f"#status {value}") == Status(SettableStatus(value))


@pytest.mark.parametrize("line", ["#status closed", "#status", "#status new waiting"])
def test_status_refuses_closed_a_missing_or_an_extra_value(line: str) -> None:
    assert refused(line).line == 1


def test_assign_me_is_the_sender() -> None:
    result = parse_commands("#assign me", sender="Bob@Example.org", tz=ZONE, now=NOW)
    assert isinstance(result, ParsedCommands)
    assert result.commands == (Assign("bob@example.org"),)


def test_assign_an_address_lower_cases_it_and_refuses_a_non_address() -> None:
    assert one("#assign <Carol@Example.org>") == Assign("carol@example.org")
    assert "not an address" in refused("#assign carol").reason


def test_urgent_and_anonymous_take_nothing_or_off() -> None:
    assert one("#urgent") == Urgent(on=True)
    assert one("#urgent OFF") == Urgent(on=False)
    assert one("#anonymous off") == Anonymous(on=False)
    assert one("#anonymous") == Anonymous(on=True)
    assert refused("#urgent maybe").line == 1


def test_accused_keeps_the_written_spelling_beside_the_lower_cased_address() -> None:
    assert one("#accused Mallory@Example.COM") == Accused(
        "mallory@example.com", "Mallory@Example.COM"
    )
    assert refused("#accused").reason == "expected an address"


def test_participant_needs_an_address_and_target_or_witness() -> None:
    assert one("#participant wit@example.org Witness") == Participant(
        "wit@example.org", "wit@example.org", ParticipantRole.WITNESS
    )
    assert "not a role" in refused("#participant wit@example.org accused").reason
    assert refused("#participant wit@example.org").reason == "expected target or witness"


def test_reply_carries_the_text_below_the_commands() -> None:
    parsed = ok("#status waiting\n#reply\n\nThank you for your report.\n\nThe team")
    assert parsed.outgoing == Reply()
    assert parsed.text == "Thank you for your report.\n\nThe team"


def test_to_and_notify_accused_are_outgoing_commands() -> None:
    assert ok("#to W@example.org\ntext").outgoing == To("w@example.org", "W@example.org")
    assert ok("#notify-accused\ntext").outgoing == NotifyAccused()


@pytest.mark.parametrize("line", ["#reply", "#to w@example.org", "#notify-accused"])
def test_an_outgoing_command_without_text_is_refused(line: str) -> None:
    error = refused(f"#urgent\n{line}\n\n")
    assert error.line == 2
    assert "needs text" in error.reason


def test_an_outgoing_command_must_be_the_last_command() -> None:
    error = refused("#reply\n#status waiting\ntext")
    assert error.line == 2
    assert "must be the last command" in error.reason


def test_only_one_outgoing_command_per_message() -> None:
    error = refused("#reply\n#notify-accused\ntext")
    assert error.line == 2
    assert "only one of" in error.reason


def test_commands_without_arguments_refuse_arguments() -> None:
    assert one("#escalate") == Escalate()
    assert one("#recuse") == Recuse()
    assert refused("#escalate now").line == 1
    assert refused("#reply please\ntext").line == 1


def test_ban_with_every_option_and_a_quoted_reason() -> None:
    command = one('#ban *@spam.example list=Dev@Lists.example.org for=7d reason="spam and abuse"')
    assert command == Ban(
        "*@spam.example",
        BanScope.LIST,
        "dev@lists.example.org",
        NOW + timedelta(days=7),
        "spam and abuse",
    )


def test_ban_without_list_is_the_default_scope_and_list_all_is_explicit() -> None:
    assert one("#ban x@example.com") == Ban("x@example.com", BanScope.DEFAULT, None, None, None)
    assert one("#ban x@example.com list=all") == Ban(
        "x@example.com", BanScope.ALL, None, None, None
    )


def test_ban_keeps_backslashes_and_quoted_spaces_in_a_regex_pattern() -> None:
    command = one(r"#ban 're:.*\.spam\.example' reason='it''s spam'")
    assert isinstance(command, Ban)
    assert command.pattern == r"re:.*\.spam\.example"
    assert command.reason == "its spam"


def test_ban_until_a_date_is_midnight_in_the_configured_zone() -> None:
    command = one("#ban x@example.com until=2026-04-01")
    assert isinstance(command, Ban)
    assert command.until == datetime(2026, 4, 1, tzinfo=ZONE)


def test_for_and_until_are_exclusive() -> None:
    assert "exclusive" in refused("#ban x@example.com for=7d until=2026-04-01").reason
    assert "exclusive" in refused("#sanction warning for=7d until=2026-04-01").reason


def test_until_in_the_past_or_today_is_refused() -> None:
    assert "not in the future" in refused("#ban x@example.com until=2026-03-10").reason
    assert "not in the future" in refused("#ban x@example.com until=2025-01-01").reason


@pytest.mark.parametrize(
    "line",
    [
        "#ban",
        "#ban x@example.com for=7x",
        "#ban x@example.com for=0d",
        "#ban x@example.com for=200000000w",  # past timedelta's range: was an OverflowError
        "#ban x@example.com for=3651d",
        "#ban x@example.com for=\u0667d",  # an Arabic-Indic 7
        "#ban x@example.com until=2026-13-01",
        "#ban x@example.com colour=red",
        "#ban x@example.com spam",
        "#ban x@example.com for=1d for=2d",
        "#ban x@example.com list=",
        '#ban x@example.com reason="unterminated',
    ],
)
def test_ban_refuses_bad_arguments(line: str) -> None:
    assert refused(line).line == 1


def test_an_unbalanced_quote_is_named_in_the_reason() -> None:
    assert refused("#ban x@example.com reason='oops").reason == "unbalanced ' quote"


def test_unban_by_pattern_or_by_ban_id() -> None:
    assert one("#unban *@spam.example list=dev@lists.example.org") == Unban(
        "*@spam.example", None, BanScope.LIST, "dev@lists.example.org"
    )
    assert one("#unban 17") == Unban(None, "17", BanScope.DEFAULT, None)
    assert one("#unban re:.*@x") == Unban("re:.*@x", None, BanScope.DEFAULT, None)
    assert refused("#unban 17 for=1d").line == 1
    assert refused("#unban").line == 1


def test_sanction_with_a_duration_and_a_free_note() -> None:
    assert one("#sanction no-contact for=2w don't contact the reporter") == Sanction(
        SanctionKind.NO_CONTACT, NOW + timedelta(weeks=2), "don't contact the reporter"
    )


def test_sanction_with_a_quoted_note_and_no_end() -> None:
    assert one('#sanction warning "first and last"') == Sanction(
        SanctionKind.WARNING, None, "first and last"
    )


@pytest.mark.parametrize("kind", [kind.value for kind in SanctionKind])
def test_sanction_accepts_every_kind(kind: str) -> None:
    command = one(f"#sanction {kind}")
    assert isinstance(command, Sanction)
    assert command.kind is SanctionKind(kind)


def test_sanction_refuses_an_unknown_kind_or_none() -> None:
    assert "not a sanction kind" in refused("#sanction scolding").reason
    assert refused("#sanction").reason == "expected a sanction kind"


def test_remind_after_a_duration_or_on_a_date_with_a_note() -> None:
    assert one("#remind 3d check on the witness") == Remind(
        NOW + timedelta(days=3), "check on the witness"
    )
    assert one("#remind 2026-03-20") == Remind(datetime(2026, 3, 20, tzinfo=ZONE), "")


def test_remind_refuses_a_past_date_or_garbage() -> None:
    assert "not in the future" in refused("#remind 2026-01-01").reason
    assert "expected a duration" in refused("#remind soon").reason
    assert refused("#remind").line == 1


def test_release_and_discard_take_one_held_id() -> None:
    assert one("#release h-42") == Release("h-42")
    assert one("#discard h-42") == Discard("h-42")
    assert refused("#release").line == 1
    assert refused("#discard a b").line == 1


def test_merge_takes_a_positive_case_number() -> None:
    assert one("#merge 12") == Merge(12)
    for line in ("#merge", "#merge 0", "#merge twelve", "#merge -3", "#merge 1234567890"):
        assert refused(line).line == 1


def test_on_behalf_as_the_first_line_with_ack_after_it() -> None:
    parsed = ok("#on-behalf Reporter@Example.net\n#ack\nThe report text.")
    assert parsed.on_behalf == OnBehalf("reporter@example.net", "Reporter@Example.net")
    assert parsed.commands[1] == Ack()
    assert parsed.acknowledge
    assert parsed.text == "The report text."


def test_on_behalf_anywhere_but_the_first_line_is_refused() -> None:
    error = refused("#urgent\n#on-behalf r@example.net\ntext")
    assert (error.line, error.text) == (2, "#on-behalf r@example.net")


def test_ack_without_on_behalf_directly_before_it_is_refused() -> None:
    assert refused("#ack").line == 1
    assert refused("#on-behalf r@example.net\n#urgent\n#ack").line == 3


def test_close_defaults_to_resolved_and_takes_an_outcome_and_a_note() -> None:
    assert one("#close") == Close(Outcome.RESOLVED, "")
    assert one("#close no-violation a misunderstanding") == Close(
        Outcome.NO_VIOLATION, "a misunderstanding"
    )
    assert one("#close BANNED") == Close(Outcome.BANNED, "")
    assert one("#close reporter's issue handled") == Close(
        Outcome.RESOLVED, "reporter's issue handled"
    )


def test_unknown_command_names_the_line_number_text_and_reason() -> None:
    error = refused("#urgent\n#frobnicate now\ntext")
    assert (error.line, error.text, error.reason) == (
        2,
        "#frobnicate now",
        "unknown command #frobnicate",
    )
    assert str(error) == "line 2: #frobnicate now: unknown command #frobnicate"


def test_a_hash_without_a_name_is_refused() -> None:
    assert refused("# status new").reason == "no command name after #"


def test_one_bad_third_line_refuses_the_whole_message() -> None:
    result = parse("#status investigating\n#urgent\n#ban x@example.com for=forever\n#escalate")
    assert isinstance(result, CommandError)
    assert result.line == 3
    assert result.text == "#ban x@example.com for=forever"


def test_crlf_line_ends_are_accepted() -> None:
    assert ok("#urgent\r\n#reply\r\nHello\r\n").text == "Hello"


def test_command_names_cover_every_command_of_the_spec() -> None:
    assert set(COMMAND_NAMES) == {
        "status",
        "assign",
        "urgent",
        "anonymous",
        "accused",
        "participant",
        "reply",
        "to",
        "notify-accused",
        "escalate",
        "ban",
        "unban",
        "sanction",
        "remind",
        "recuse",
        "release",
        "discard",
        "merge",
        "on-behalf",
        "ack",
        "close",
    }


def test_moderators_may_only_ban_unban_release_and_discard() -> None:
    allowed = ok("#ban x@example.com\n#unban 3\n#release h1\n#discard h2").commands
    assert all(moderator_allowed(command) for command in allowed)
    assert not any(moderator_allowed(command) for command in ok("#urgent\n#close").commands)


def test_an_empty_quoted_argument_is_refused() -> None:
    assert refused("#ban ''").reason == "expected a pattern"


def test_a_huge_command_block_gets_its_error_at_the_right_line() -> None:
    block = "#urgent\n" * 50_000 + "#ban x@example.com " + "'a' " * 50_000 + "\n"
    error = refused(block)
    assert error.line == 50_001


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#accused Alice+x@Example.ORG", Accused("alice@example.org", "Alice+x@Example.ORG")),
        (
            "#to prvs=1234abcd=wit@example.org",
            To("wit@example.org", "prvs=1234abcd=wit@example.org"),
        ),
        (
            "#participant tess@Bücher.example target",
            Participant(
                "tess@xn--bcher-kva.example", "tess@Bücher.example", ParticipantRole.TARGET
            ),
        ),
        ("#assign Bob+conduct@example.org", Assign("bob@example.org")),
        ("#on-behalf r+x@example.net", OnBehalf("r@example.net", "r+x@example.net")),
    ],
)
def test_addresses_are_normalised_like_participants_and_bans(line: str, expected: Command) -> None:
    """SPEC section 6: subaddress and BATV tags removed, IDNA A-labels, lower case; the
    written spelling is kept only as where mail goes."""
    text = f"{line}\ntext" if line.startswith("#to") else line
    assert ok(text).commands[0] == expected


def test_an_address_that_does_not_normalise_is_refused() -> None:
    assert "not an address" in refused("#accused mallory@bad..example").reason


@pytest.mark.parametrize("command", ["#accused {}", "#participant {} witness", "#to {}\ntext"])
def test_an_address_longer_than_an_smtp_path_is_refused(command: str) -> None:
    """PostgreSQL keeps addresses in 320 characters: a longer one used to be quarantined
    for ever instead of refused."""
    too_long, longest = "m" * 243 + "@example.com", "m" * 242 + "@example.com"
    assert "longer than an address can be" in refused(command.format(too_long)).reason
    assert ok(command.format(longest)).commands
