"""Reads the INI file of SPEC section 8 once into frozen, fully validated settings."""

from __future__ import annotations

import configparser
import difflib
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from gateway import config_syntax
from gateway import config_values as v
from gateway.config_schema import (
    FREE_FORM_SECTIONS,
    SCHEMA,
    GatewaySettings,
    ImapSettings,
    OutboundSettings,
    RelaySettings,
    ReminderSettings,
    RetentionSettings,
    Settings,
    SmtpSettings,
    StorageSettings,
)
from gateway.config_values import HostPort, ValueProblem
from rules.addresses import normalise_list
from rules.errors import GatewayError

# The settings types live in config_schema; callers import them from here.
__all__ = [
    "SCHEMA",
    "ConfigError",
    "GatewaySettings",
    "ImapSettings",
    "OutboundSettings",
    "RelaySettings",
    "ReminderSettings",
    "RetentionSettings",
    "Settings",
    "SmtpSettings",
    "StorageSettings",
    "load",
    "resolve_path",
]

DEFAULT_PATH = Path("/etc/conduct-gateway/gateway.ini")
ENV_VAR = "CONDUCT_GATEWAY_CONFIG"
T = TypeVar("T")


class ConfigError(GatewayError):
    """A configuration problem, always naming the file and, where there is one, section and key."""

    def __init__(
        self, file: Path | str, problem: str, section: str | None = None, key: str | None = None
    ) -> None:
        where = f"[{section}] " if section else ""
        where += f"{key}" if key else ""
        message = f"{file}: {where.strip()}: {problem}" if where else f"{file}: {problem}"
        super().__init__(message)
        self.file = str(file)
        self.section = section
        self.key = key


# A name no section header can spell (headers end at the line's end).
_NO_DEFAULT_SECTION = "\n"


def resolve_path(option: str | None, environ: Mapping[str, str]) -> Path:
    """`-c FILE`, else $CONDUCT_GATEWAY_CONFIG, else /etc/conduct-gateway/gateway.ini."""
    if option:
        return Path(option)
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    return DEFAULT_PATH


def load(path: Path) -> Settings:
    """Read and validate the whole file; raise ConfigError naming file, section and key."""
    parser = configparser.ConfigParser(
        delimiters=("=",),
        comment_prefixes=(";", "#"),
        inline_comment_prefixes=(";", "#"),
        interpolation=None,
        strict=True,
        empty_lines_in_values=False,
        # configparser spreads a [DEFAULT] section's keys into every section, so an error
        # would name the wrong one; with no default section it is refused by its name.
        default_section=_NO_DEFAULT_SECTION,
    )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(path, f"cannot read the configuration file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "expected a UTF-8 text file") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.DuplicateOptionError as error:
        raise ConfigError(path, "the key is given twice", error.section, error.option) from None
    except configparser.DuplicateSectionError as error:
        raise ConfigError(path, "the section is given twice", error.section) from None
    except configparser.Error as error:
        explained = config_syntax.explain(text, error)
        if explained is None:
            first = error.message.splitlines()[0]
            raise ConfigError(path, f"not a valid INI file: {first}") from None
        raise ConfigError(path, *explained) from None
    return _Reader(path, parser).settings()


class _Reader:
    def __init__(self, path: Path, parser: configparser.ConfigParser) -> None:
        self.path = path
        self.parser = parser
        self.paths = v.path_relative_to(path.resolve().parent)
        self._check_names()

    def _check_names(self) -> None:
        known = set(SCHEMA) | FREE_FORM_SECTIONS
        for section in self.parser.sections():
            if section.upper() == "DEFAULT":
                raise ConfigError(
                    self.path,
                    "is not supported: give each key in its own section",
                    section,
                )
            # Masked as a value is: a URL without its `key =` may end up read as a name.
            if section not in known:
                raise ConfigError(
                    self.path, "unknown section" + _hint(section, known), v.mask_password(section)
                )
            if section in FREE_FORM_SECTIONS:
                continue
            for key in self.parser[section]:
                if key not in SCHEMA[section]:
                    raise ConfigError(
                        self.path,
                        "unknown key" + _hint(key, SCHEMA[section]),
                        section,
                        v.mask_password(key),
                    )

    def raw(self, section: str, key: str) -> str:
        if self.parser.has_option(section, key):
            return self.parser.get(section, key)
        default = SCHEMA[section][key]
        if default is None:
            raise ConfigError(self.path, "is required", section, key)
        return default

    def get(self, section: str, key: str, parse: Callable[[str], T]) -> T:
        value = self.raw(section, key)
        try:
            return parse(value)
        except ValueProblem as problem:
            # The value is quoted masked: a storage URL may carry the database password.
            raise ConfigError(
                self.path, f"{v.mask_password(value)!r}: expected {problem.expected}", section, key
            ) from None

    def settings(self) -> Settings:
        gateway = self._gateway()
        relay = self._relay()
        return Settings(
            path=self.path,
            gateway=gateway,
            smtp=self._smtp(),
            relay=relay,
            moderators=self._moderators(relay),
            outbound=self._outbound(),
            imap=self._imap(),
            storage=StorageSettings(
                url=self._storage_url(),
                leader_lease=self.get("storage", "leader_lease", v.duration),
            ),
            reminders=ReminderSettings(
                acknowledge_within=self.get("reminders", "acknowledge_within", v.duration),
                urgent_repeat=self.get("reminders", "urgent_repeat", v.duration),
                escalate_within=self.get("reminders", "escalate_within", v.duration),
                follow_up_after=self.get("reminders", "follow_up_after", v.duration),
                digest_at=self.get("reminders", "digest_at", v.time_of_day),
                timezone=self.get("reminders", "timezone", v.timezone),
            ),
            policy_listen=self.get("policy", "listen", v.optional_host_port),
            require_dkim=self.get("auth", "require_dkim", v.boolean),
            retention=RetentionSettings(
                no_violation=self.get("retention", "no_violation", v.duration),
                resolved=self.get("retention", "resolved", v.duration),
                flagged=self.get("retention", "flagged", v.duration),
                banned_extra=self.get("retention", "banned_extra", v.duration),
            ),
            metrics_listen=self.get("metrics", "listen", v.optional_host_port),
            log_level=self.get("logging", "level", v.choice("debug", "info", "warning", "error")),
            log_format=self.get("logging", "format", v.choice("text", "json")),
        )

    def _gateway(self) -> GatewaySettings:
        conduct = self.get("gateway", "conduct_address", v.address)
        staff = self.get("gateway", "staff", v.people)
        if not staff:
            raise ConfigError(self.path, "expected at least one staff address", "gateway", "staff")
        director = self.get("gateway", "executive_director", v.person)
        postmaster = self.get("gateway", "postmaster", lambda t: v.address(t) if t.strip() else "")
        local = self.get("gateway", "local_domains", v.domains)
        conduct_domain = conduct.rpartition("@")[2]
        if not local:
            local = (conduct_domain,)
        elif conduct_domain not in local:
            raise ConfigError(
                self.path,
                f"expected the list to include the conduct address's domain {conduct_domain}",
                "gateway",
                "local_domains",
            )
        return GatewaySettings(
            conduct_address=conduct,
            staff=staff,
            executive_director=director,
            postmaster=postmaster or staff[0].address,
            case_tag=self.get("gateway", "case_tag", v.case_tag),
            local_domains=local,
            secret_file=self.get("gateway", "secret_file", self.paths),
            previous_secret_file=self.get("gateway", "previous_secret_file", self.paths.optional),
        )

    def _smtp(self) -> SmtpSettings:
        certificate = self.get("smtp", "tls_certificate", self.paths.optional)
        key = self.get("smtp", "tls_key", self.paths.optional)
        if (certificate is None) != (key is None):
            raise ConfigError(
                self.path,
                "expected tls_certificate and tls_key to be set together",
                "smtp",
                "tls_key" if key is None else "tls_certificate",
            )
        hostname = self.get("smtp", "hostname", lambda t: v.domain(t) if t.strip() else "")
        return SmtpSettings(
            listen=self.get("smtp", "listen", v.host_port),
            hostname=hostname or socket.getfqdn(),
            max_message_size=self.get("smtp", "max_message_size", v.size),
            max_connections=self.get("smtp", "max_connections", v.positive_int),
            max_recipients=self.get("smtp", "max_recipients", v.positive_int),
            timeout=self.get("smtp", "timeout", v.duration),
            tls_certificate=certificate,
            tls_key=key,
        )

    def _relay(self) -> RelaySettings:
        hold_days = self.get("relay", "hold_days", v.days)
        return RelaySettings(
            upstream=self.get("relay", "upstream", v.host_port),
            upstream_protocol=self.get("relay", "upstream_protocol", v.choice("lmtp", "smtp")),
            lists=tuple(normalise_list(a) for a in self.get("relay", "lists", v.addresses)),
            list_domains=self.get("relay", "list_domains", v.domains),
            ban_action=self.get("relay", "ban_action", v.choice("reject", "hold", "discard")),
            hold_days=hold_days,
        )

    def _moderators(self, relay: RelaySettings) -> dict[str, tuple[str, ...]]:
        if not self.parser.has_section("moderators"):
            return {}
        result: dict[str, tuple[str, ...]] = {}
        for key in self.parser["moderators"]:
            try:
                list_address = normalise_list(v.address(key))
            except ValueProblem as problem:
                raise ConfigError(
                    self.path,
                    f"{key!r}: expected the key to be {problem.expected}",
                    "moderators",
                    key,
                ) from None
            served = list_address in relay.lists or (
                list_address.rpartition("@")[2] in relay.list_domains
            )
            if not served:
                raise ConfigError(
                    self.path,
                    f"{key!r}: expected a list served by [relay] lists or list_domains",
                    "moderators",
                    key,
                )
            result[list_address] = self.get("moderators", key, v.addresses)
        return result

    def _outbound(self) -> OutboundSettings:
        raw = self.raw("outbound", "smarthost").strip()
        maildir: Path | None = None
        smarthost: HostPort | None = None
        if raw.startswith("maildir:"):
            maildir = self.get("outbound", "smarthost", lambda t: self.paths(t.strip()[8:]))
        else:
            smarthost = self.get("outbound", "smarthost", _smarthost)
        username = self.get("outbound", "username", v.optional_text)
        password_file = self.get("outbound", "password_file", self.paths.optional)
        if (username is None) != (password_file is None):
            raise ConfigError(
                self.path,
                "expected username and password_file to be set together",
                "outbound",
                "password_file" if username else "username",
            )
        return OutboundSettings(
            smarthost=smarthost,
            maildir=maildir,
            tls=self.get("outbound", "tls", v.choice("none", "opportunistic", "required")),
            username=username,
            password_file=password_file,
            retry_after=self.get("outbound", "retry_after", v.duration),
        )

    def _imap(self) -> ImapSettings:
        enabled = self.get("imap", "enabled", v.boolean)
        settings = ImapSettings(
            enabled=enabled,
            host=self.get("imap", "host", v.optional_text),
            port=self.get("imap", "port", v.port),
            security=self.get("imap", "security", v.choice("ssl", "starttls", "none")),
            username=self.get("imap", "username", v.optional_text),
            password_file=self.get("imap", "password_file", self.paths.optional),
            folder=self.get("imap", "folder", v.text_value),
            processed_folder=self.get("imap", "processed_folder", v.text_value),
            poll_interval=self.get("imap", "poll_interval", v.duration),
        )
        if enabled:
            for key in ("host", "username", "password_file"):
                if getattr(settings, key) is None:
                    raise ConfigError(
                        self.path, "is required when [imap] enabled = yes", "imap", key
                    )
        return settings

    def _storage_url(self) -> str:
        text = self.get("storage", "url", v.storage_url)
        url = make_url(text)
        if url.drivername.startswith("sqlite") and url.database:
            database = Path(url.database)
            if not database.is_absolute():
                # Relative SQLite paths, like every path here, start at the file's directory.
                text = url.set(database=str(self.paths(url.database))).render_as_string(
                    hide_password=False
                )
        return text


def _smarthost(text: str) -> HostPort:
    try:
        return v.host_port(text)
    except ValueProblem:
        raise ValueProblem("HOST:PORT of the smarthost, or maildir:PATH") from None


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def environment_path(option: str | None) -> Path:
    return resolve_path(option, os.environ)
