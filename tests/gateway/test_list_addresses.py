"""One normalisation for list addresses: configuration, CLI `--list`, `#ban list=`, ban scopes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import config
from gateway.cli_bans import Refused, served_list
from gateway.config import Settings
from rules import command_types as ct
from rules.addresses import AddressError, normalise_list
from rules.bans import Ban, BanIndex, parse_pattern
from rules.commands import ParsedCommands, parse_commands

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
A_LABEL = "dev@xn--bcher-kva.example"
CONFIG = """[gateway]
conduct_address = conduct@example.org
staff = alice@example.org
executive_director = ed@example.org
[relay]
lists = Dev@Bücher.Example, ops+x@lists.example.org
list_domains = Grüppen.example
[moderators]
DEV@bücher.example = carol@example.org
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "gateway.ini"
    path.write_text(CONFIG, encoding="utf-8")
    return config.load(path)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Dev@Bücher.Example", A_LABEL),
        ("<dev@XN--BCHER-KVA.example.>", A_LABEL),
        ("Dev+Topic@Lists.Example.org", "dev+topic@lists.example.org"),  # a name, not a tag
    ],
)
def test_a_list_address_is_lower_case_with_a_label_domain(written: str, expected: str) -> None:
    assert normalise_list(written) == expected


def test_a_list_address_without_a_domain_is_refused() -> None:
    with pytest.raises(AddressError):
        normalise_list("dev")


def test_configuration_names_lists_and_moderated_lists_as_routing_does(
    settings: Settings,
) -> None:
    assert settings.relay.lists == (A_LABEL, "ops+x@lists.example.org")
    assert settings.relay.list_domains == ("xn--grppen-4ya.example",)
    assert dict(settings.moderators) == {A_LABEL: ("carol@example.org",)}


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("dev@bücher.example", A_LABEL),
        ("DEV@XN--BCHER-KVA.EXAMPLE", A_LABEL),
        ("team@Grüppen.example", "team@xn--grppen-4ya.example"),
    ],
)
def test_cli_list_option_accepts_a_served_list_however_written(
    settings: Settings, written: str, expected: str
) -> None:
    assert served_list(settings, written) == expected


def test_cli_list_option_refuses_a_list_not_served(settings: Settings) -> None:
    with pytest.raises(Refused):
        served_list(settings, "dev@elsewhere.example")


def test_a_ban_command_scopes_a_unicode_list_as_routing_names_it() -> None:
    parsed = parse_commands(
        "#ban spammer@bad.example list=Dev@Bücher.Example",
        sender="alice@example.org",
        tz=UTC,
        now=NOW,
    )
    assert isinstance(parsed, ParsedCommands)
    [command] = parsed.commands
    assert isinstance(command, ct.Ban)
    assert command.list_address == A_LABEL


@pytest.mark.parametrize("stored", ["dev@bücher.example", "Dev@XN--BCHER-KVA.example", A_LABEL])
def test_a_list_scoped_ban_covers_its_list_however_its_scope_was_stored(stored: str) -> None:
    ban = Ban(
        id=1,
        pattern=parse_pattern("spammer@bad.example"),
        list=stored,
        reason=None,
        created_by="cli",
        created_at=NOW,
    )
    assert ban.covers_list(A_LABEL)
    assert not ban.covers_list("dev@lists.example.org")
    assert BanIndex([ban]).match("spammer@bad.example", A_LABEL, NOW) == ban
