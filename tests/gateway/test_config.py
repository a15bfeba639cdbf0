"""Configuration: every key validated, errors name file, section, key and what was expected."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway import config
from gateway.config import ConfigError
from gateway.config_values import HostPort, ValueProblem
from rules.errors import GatewayError

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = """[gateway]
conduct_address = conduct@example.org
staff = Alice Example <alice@example.org>, bob@example.org
executive_director = Erin Director <ed@example.org>
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.ini"
    path.write_text(text, encoding="utf-8")
    return path


def load_with(tmp_path: Path, extra: str) -> config.Settings:
    return config.load(write(tmp_path, REQUIRED + extra))


def test_the_example_file_loads_as_is() -> None:
    settings = config.load(ROOT / "config.example.ini")
    assert settings.gateway.conduct_address == "conduct@example.org"
    assert settings.outbound.maildir == ROOT / "var" / "outgoing"
    assert settings.smtp.listen == HostPort("127.0.0.1", 2525)
    assert settings.storage.url == f"sqlite:///{ROOT / 'var' / 'gateway.db'}"


def example_keys() -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (value, the comment above the key or the group it stands in)."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    section, comment, after_key = "", "", False
    for raw in (ROOT / "config.example.ini").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith(";"):
            comment = (comment if not after_key else "") + " " + line.lstrip("; ")
            after_key = False
        elif line.startswith("["):
            section, comment, after_key = line.strip("[]"), "", False
        elif "=" in line:
            key, _, value = line.partition("=")
            found[section, key.strip()] = (value.split(" ;")[0].strip(), comment)
            after_key = True
    return found


def test_the_example_shows_every_key_and_states_the_default_it_does_not_use() -> None:
    """README: every key not required has the default shown in the example; where the
    example sets another value (for `make run`, or as an example), its comment says it."""
    shown = example_keys()
    for section, keys in config.SCHEMA.items():
        for key, default in keys.items():
            assert (section, key) in shown, f"[{section}] {key} is not in the example"
            value, comment = shown[section, key]
            if default is None or value == default:
                continue
            assert "default" in comment, f"[{section}] {key}: the default is not stated"
            if default:
                assert default in comment, f"[{section}] {key}: the comment does not say {default}"


# SPEC section 8, key by key: the value each left-out key takes (a minimal file gives only
# the three required keys). `hostname` is this host's FQDN, checked on its own below.
DEFAULTS: list[tuple[str, str, Any]] = [
    ("gateway", "postmaster", "alice@example.org"),
    ("gateway", "case_tag", "Conduct"),
    ("gateway", "local_domains", ("example.org",)),
    ("gateway", "secret_file", Path("/var/lib/conduct-gateway/secret")),
    ("gateway", "previous_secret_file", None),
    ("smtp", "listen", HostPort("127.0.0.1", 2525)),
    ("smtp", "max_message_size", 25 * 1024 * 1024),
    ("smtp", "max_connections", 100),
    ("smtp", "max_recipients", 100),
    ("smtp", "timeout", timedelta(minutes=5)),
    ("smtp", "tls_certificate", None),
    ("smtp", "tls_key", None),
    ("relay", "upstream", HostPort("127.0.0.1", 8024)),
    ("relay", "upstream_protocol", "lmtp"),
    ("relay", "lists", ()),
    ("relay", "list_domains", ()),
    ("relay", "ban_action", "reject"),
    ("relay", "hold_days", 14),
    ("outbound", "smarthost", HostPort("127.0.0.1", 25)),
    ("outbound", "maildir", None),
    ("outbound", "tls", "opportunistic"),
    ("outbound", "username", None),
    ("outbound", "password_file", None),
    ("outbound", "retry_after", timedelta(minutes=1)),
    ("imap", "enabled", False),
    ("imap", "host", None),
    ("imap", "port", 993),
    ("imap", "security", "ssl"),
    ("imap", "username", None),
    ("imap", "password_file", None),
    ("imap", "folder", "INBOX"),
    ("imap", "processed_folder", "Processed"),
    ("imap", "poll_interval", timedelta(seconds=60)),
    ("storage", "url", "sqlite:////var/lib/conduct-gateway/gateway.db"),
    ("storage", "leader_lease", timedelta(seconds=30)),
    ("reminders", "acknowledge_within", timedelta(hours=24)),
    ("reminders", "urgent_repeat", timedelta(hours=1)),
    ("reminders", "escalate_within", timedelta(hours=72)),
    ("reminders", "follow_up_after", timedelta(days=7)),
    ("reminders", "digest_at", time(9, 0)),
    ("reminders", "timezone", ZoneInfo("UTC")),
    ("policy", "listen", None),
    ("auth", "require_dkim", True),
    ("retention", "no_violation", timedelta(0)),
    ("retention", "resolved", timedelta(weeks=60)),
    ("retention", "flagged", timedelta(weeks=112)),
    ("retention", "banned_extra", timedelta(weeks=112)),
    ("metrics", "listen", None),
    ("logging", "level", "info"),
    ("logging", "format", "text"),
    ("moderators", "*", {}),
]
# Settings fields that are not a section's dataclass field of the same name.
_FLAT = {
    ("policy", "listen"): "policy_listen",
    ("auth", "require_dkim"): "require_dkim",
    ("metrics", "listen"): "metrics_listen",
    ("logging", "level"): "log_level",
    ("logging", "format"): "log_format",
    ("moderators", "*"): "moderators",
}


def setting(settings: config.Settings, section: str, key: str) -> Any:
    if (section, key) in _FLAT:
        return getattr(settings, _FLAT[section, key])
    return getattr(getattr(settings, section), key)


@pytest.mark.parametrize(("section", "key", "default"), DEFAULTS)
def test_every_left_out_key_takes_its_spec_default(
    tmp_path: Path, section: str, key: str, default: Any
) -> None:
    assert setting(load_with(tmp_path, ""), section, key) == default


def test_the_defaults_table_covers_every_key_of_the_schema() -> None:
    listed = {(section, key) for section, key, _ in DEFAULTS} | {("smtp", "hostname")}
    required = {
        ("gateway", "conduct_address"),
        ("gateway", "staff"),
        ("gateway", "executive_director"),
    }
    schema = {(section, key) for section, keys in config.SCHEMA.items() for key in keys}
    assert schema - required <= listed


def test_the_smtp_hostname_defaults_to_this_hosts_fqdn(tmp_path: Path) -> None:
    assert load_with(tmp_path, "").smtp.hostname == socket.getfqdn()


def test_staff_with_display_names_are_parsed(tmp_path: Path) -> None:
    settings = load_with(tmp_path, "")
    assert [(p.name, p.address) for p in settings.gateway.staff] == [
        ("Alice Example", "alice@example.org"),
        ("", "bob@example.org"),
    ]
    assert settings.gateway.executive_director.name == "Erin Director"


def test_inline_comments_after_whitespace_are_ignored(tmp_path: Path) -> None:
    settings = load_with(tmp_path, "[smtp]\nmax_connections = 7   ; seven\ntimeout = 2m # two\n")
    assert settings.smtp.max_connections == 7
    assert settings.smtp.timeout == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("reminders", "acknowledge_within", "soon", "a duration such as 90s"),
        ("reminders", "urgent_repeat", "10", "a duration"),
        ("reminders", "digest_at", "25:00", "a time of day HH:MM"),
        ("reminders", "timezone", "Mars/Olympus", "an IANA time zone"),
        ("smtp", "listen", "localhost", "HOST:PORT"),
        ("smtp", "listen", "127.0.0.1:70000", "HOST:PORT"),
        ("smtp", "max_message_size", "25G", "a size in bytes"),
        ("smtp", "max_connections", "-1", "a whole number greater than 0"),
        ("smtp", "hostname", "not a host", "a domain name"),
        ("relay", "upstream_protocol", "uucp", "one of lmtp, smtp"),
        ("relay", "ban_action", "bounce", "one of reject, hold, discard"),
        ("relay", "lists", "dev@lists.example.org, not-an-address", "an email address"),
        ("relay", "list_domains", "lists..example.org", "a domain name"),
        (
            "outbound",
            "smarthost",
            "mail.example.org",
            "HOST:PORT of the smarthost, or maildir:PATH",
        ),
        ("outbound", "tls", "maybe", "one of none, opportunistic, required"),
        ("imap", "port", "imap", "a TCP port"),
        ("imap", "enabled", "perhaps", "yes or no"),
        ("storage", "url", "mysql://root@localhost/db", "an SQLAlchemy URL"),
        ("storage", "url", "sqlite://", "an in-memory SQLite database would lose mail"),
        ("auth", "require_dkim", "sometimes", "yes or no"),
        ("retention", "resolved", "60 weeks", "a duration"),
        ("logging", "level", "loud", "one of debug, info, warning, error"),
        ("logging", "format", "xml", "one of text, json"),
        ("smtp", "max_recipients", "0", "a whole number greater than 0"),
        ("smtp", "max_connections", "many", "a whole number greater than 0"),
        ("smtp", "timeout", "forever", "a duration"),
        ("relay", "hold_days", "two weeks", "a whole number greater than 0"),
        ("relay", "upstream", "lists.example.org", "HOST:PORT"),
        ("outbound", "retry_after", "1 minute", "a duration"),
        ("imap", "security", "tls", "one of ssl, starttls, none"),
        ("imap", "poll_interval", "often", "a duration"),
        ("reminders", "escalate_within", "3 days", "a duration"),
        ("reminders", "follow_up_after", "-7d", "a duration"),
        ("storage", "leader_lease", "30", "a duration"),
        ("policy", "listen", "10040", "HOST:PORT"),
        ("metrics", "listen", "127.0.0.1", "HOST:PORT"),
        ("retention", "banned_extra", "ever", "a duration"),
    ],
)
def test_a_bad_value_names_file_section_key_value_and_expectation(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, REQUIRED + f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: [{section}] {key}: ")
    assert repr(value) in message
    assert expected in message


# Each passes str.isdigit() or \\d and once reached int() or timedelta() unguarded: the
# loader crashed with a traceback (exit 1) or took a digit the operator cannot see.
OUT_OF_RANGE = [
    pytest.param("relay", "hold_days", "\u00b2", "a whole number greater than 0", id="superscript"),
    pytest.param("imap", "port", "\u00b9", "a TCP port from 1 to 65535", id="superscript-port"),
    pytest.param("smtp", "max_connections", "\u0663", "a whole number", id="arabic-indic"),
    pytest.param("smtp", "max_recipients", "\uff11\uff10", "a whole number", id="fullwidth"),
    pytest.param("smtp", "listen", "127.0.0.1:\u0662\u0665", "HOST:PORT", id="arabic-port"),
    pytest.param("smtp", "max_message_size", "\u0662\u0665M", "a size in bytes", id="arabic-size"),
    pytest.param("smtp", "timeout", "\u0665m", "a duration such as", id="arabic-duration"),
    pytest.param("reminders", "digest_at", "\u0660\u0669:00", "a time of day", id="arabic-time"),
    pytest.param("smtp", "timeout", "200000000w", "a duration of at most 3650d", id="overflow"),
    pytest.param("retention", "resolved", "3651d", "a duration of at most 3650d", id="over-max"),
    pytest.param("storage", "leader_lease", "999999999s", "at most 3650d", id="seconds"),
    pytest.param("relay", "hold_days", "3651", "at most 3650", id="hold-days"),
    pytest.param("relay", "hold_days", "9" * 5000, "at most 3650", id="hold-days-huge"),
    pytest.param("smtp", "max_connections", "9" * 20, "at most 1000000", id="connections"),
]


@pytest.mark.parametrize(("section", "key", "value", "expected"), OUT_OF_RANGE)
def test_a_number_the_loader_cannot_use_is_a_config_error(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, REQUIRED + f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert str(raised.value).startswith(f"{path}: [{section}] {key}: {value!r}: expected ")
    assert expected in str(raised.value)


@pytest.mark.parametrize(("section", "key", "value", "expected"), OUT_OF_RANGE)
def test_check_config_refuses_a_number_it_cannot_use_with_exit_2(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, REQUIRED + f"[{section}]\n{key} = {value}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"[{section}] {key}: " in result.stderr


def test_the_largest_duration_and_hold_days_are_taken(tmp_path: Path) -> None:
    settings = load_with(tmp_path, "[relay]\nhold_days = 3650\n[retention]\nresolved = 3650d\n")
    assert settings.relay.hold_days == 3650
    assert settings.retention.resolved == timedelta(days=3650)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("conduct_address", "not-an-address"),
        ("staff", "alice@"),
        ("executive_director", "a@example.org, b@example.org"),
        ("postmaster", "x"),
        ("case_tag", "[bad]"),
        ("local_domains", "exa mple.org"),
    ],
)
def test_bad_gateway_values_are_refused_by_name(tmp_path: Path, key: str, value: str) -> None:
    text = REQUIRED.replace(f"{key} = ", f"{key}_old = ") if key in REQUIRED else REQUIRED
    text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}_old"))
    with pytest.raises(ConfigError, match=rf"\[gateway\] {key}: "):
        config.load(write(tmp_path, text + f"\n{key} = {value}\n"))


def test_a_misspelt_key_is_refused_by_name_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_with(tmp_path, "[reminders]\nacknowledge_whithin = 1h\n")
    assert "[reminders] acknowledge_whithin: unknown key" in str(raised.value)
    assert "did you mean 'acknowledge_within'" in str(raised.value)


def test_an_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[remniders\]: unknown section"):
        load_with(tmp_path, "[remniders]\nx = 1\n")


def test_a_required_key_left_out_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[gateway]\nconduct_address = conduct@example.org\nexecutive_director = ed@example.org\n",
    )
    with pytest.raises(ConfigError, match=r"\[gateway\] staff: is required"):
        config.load(path)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[smtp\] timeout: the key is given twice"):
        load_with(tmp_path, "[smtp]\ntimeout = 1m\ntimeout = 2m\n")


@pytest.mark.parametrize(
    ("text", "where", "shown", "expected"),
    [
        pytest.param(
            REQUIRED + "[auth]\nrequire_dkim yes\n",
            "[auth]: line 6",
            "'require_dkim yes'",
            "'key = value' or a '[section]' header",
            id="no-equals-sign",
        ),
        pytest.param(
            "case_tag = Safety\n" + REQUIRED,
            "line 1",
            "'case_tag = Safety'",
            "a '[section]' header before the first key",
            id="before-any-section",
        ),
        pytest.param(
            REQUIRED + "[auth\nrequire_dkim = yes\n",
            "line 5",
            "'[auth'",
            "a section header closed by ']', such as '[auth]'",
            id="broken-header",
        ),
        pytest.param(
            "[gateway\n" + REQUIRED.partition("\n")[2],
            "line 1",
            "'[gateway'",
            "a section header closed by ']', such as '[gateway]'",
            id="broken-first-header",
        ),
    ],
)
def test_a_malformed_line_is_named_by_number_text_and_section(
    tmp_path: Path, text: str, where: str, shown: str, expected: str
) -> None:
    """SPEC section 8: the file, where in it, and what was expected; not configparser's words."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert str(raised.value) == f"{path}: {where}: {shown}: expected {expected}"


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("password_file /etc/hunter2", "'password_file ***'"),
        ("Password: hunter2", "'Password: ***'"),
        ("url postgresql+psycopg://gw:hunter2@db.example.org/gw", "gw:***@db"),
        # An `=` in the query string makes the text before it an (unknown) key.
        ("url postgresql+psycopg://gw:hunter2@db.example.org/gw?sslmode=require", "gw:***@db"),
    ],
)
def test_a_malformed_line_never_shows_a_password(tmp_path: Path, line: str, shown: str) -> None:
    """The line goes to stderr and, on SIGHUP, to the journal (SPEC section 10)."""
    with pytest.raises(ConfigError) as raised:
        load_with(tmp_path, f"[imap]\n{line}\n")
    assert "hunter2" not in str(raised.value)
    assert shown in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        config.load(tmp_path / "absent.ini")


def test_moderators_must_name_a_served_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[moderators\] dev@lists.example.org: .*served"):
        load_with(tmp_path, "[moderators]\ndev@lists.example.org = carol@example.org\n")
    settings = load_with(
        tmp_path,
        "[relay]\nlists = dev@lists.example.org\n"
        "[moderators]\ndev@lists.example.org = carol@example.org, d@example.org\n",
    )
    assert settings.moderators == {"dev@lists.example.org": ("carol@example.org", "d@example.org")}


def test_tls_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[smtp\] tls_key: .*together"):
        load_with(tmp_path, "[smtp]\ntls_certificate = cert.pem\n")


def test_imap_enabled_needs_host_user_and_password_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[imap\] host: is required when"):
        load_with(tmp_path, "[imap]\nenabled = yes\n")


def test_local_domains_must_include_the_conduct_domain(tmp_path: Path) -> None:
    text = REQUIRED + "local_domains = other.org\n"
    with pytest.raises(ConfigError, match=r"\[gateway\] local_domains: .*example.org"):
        config.load(write(tmp_path, text))


def test_relative_paths_start_at_the_file_directory(tmp_path: Path) -> None:
    settings = load_with(
        tmp_path, "[outbound]\nsmarthost = maildir:out\n[storage]\nurl = sqlite:///state/g.db\n"
    )
    assert settings.outbound.maildir == tmp_path / "out"
    assert settings.outbound.smarthost is None
    assert settings.storage.url == f"sqlite:///{tmp_path / 'state' / 'g.db'}"
    assert settings.gateway.secret_file == Path("/var/lib/conduct-gateway/secret")


def test_the_path_comes_from_the_option_then_the_environment_then_etc() -> None:
    env = {"CONDUCT_GATEWAY_CONFIG": "/srv/env.ini"}
    assert config.resolve_path("/srv/opt.ini", env) == Path("/srv/opt.ini")
    assert config.resolve_path(None, env) == Path("/srv/env.ini")
    assert config.resolve_path(None, {}) == Path("/etc/conduct-gateway/gateway.ini")


def test_idna_domains_are_stored_as_a_labels(tmp_path: Path) -> None:
    settings = load_with(tmp_path, "[relay]\nlists = dev@bücher.example\n")
    assert settings.relay.lists == ("dev@xn--bcher-kva.example",)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gw:hunter2@db.example.org/gw",  # no driver: refused by the parser
        "mysql+pymysql://gw:hunter2@db.example.org/gw",
        "postgresql+psycopg://gw:hun@ter2@db.example.org:port/gw",  # unparsable port
        "no scheme here://gw:hunter2@db.example.org/gw",
    ],
)
def test_a_refused_storage_url_is_quoted_without_its_password(tmp_path: Path, url: str) -> None:
    """SPEC section 10: never a secret in logs; start-up errors go to stderr (the journal)."""
    with pytest.raises(ConfigError) as raised:
        load_with(tmp_path, f"[storage]\nurl = {url}\n")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'gateway.ini'}: [storage] url: ")
    assert "hunter2" not in message
    assert "ter2" not in message
    assert "gw:***@" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://gw@db.example.org:port/gw?password=hunter2",
        "postgresql+psycopg://gw@db.example.org:port/gw?sslmode=require&password=hunter2",
        "postgresql+psycopg://gw@db.example.org:port/gw?sslpassword=hunter2&sslmode=require",
        "postgresql+psycopg://gw@db.example.org:port/gw?pass%77ord=hunter2",
        "postgresql+psycopg://gw@db.example.org:port/gw?secret=hunter2",
        "postgresql://gw@db.example.org/gw?PASSWORD=hunter2",
    ],
)
def test_a_refused_storage_url_is_quoted_without_a_password_in_its_query(
    tmp_path: Path, url: str
) -> None:
    """psycopg takes `?password=` as the password: SPEC section 10, never a secret in logs."""
    with pytest.raises(ConfigError) as raised:
        load_with(tmp_path, f"[storage]\nurl = {url}\n")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'gateway.ini'}: [storage] url: ")
    assert "hunter2" not in message
    assert "=***" in message


def test_a_default_section_is_refused_by_its_name(tmp_path: Path) -> None:
    """configparser would spread its keys into every section and blame [gateway]."""
    path = write(tmp_path, "[DEFAULT]\ntimeout = 1m\n" + REQUIRED)
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    assert str(raised.value).startswith(f"{path}: [DEFAULT]: is not supported")


def test_an_empty_default_section_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[DEFAULT\]: is not supported"):
        config.load(write(tmp_path, REQUIRED + "[DEFAULT]\n"))


def test_a_value_problem_is_a_gateway_error() -> None:
    """One exception base for the project (STYLE.md)."""
    assert issubclass(ValueProblem, GatewayError)
