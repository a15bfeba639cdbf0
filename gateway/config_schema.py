"""The shape of the settings of SPEC section 8: typed sections and every key's default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config_values import HostPort, Person


@dataclass(frozen=True)
class GatewaySettings:
    conduct_address: str
    staff: tuple[Person, ...]
    executive_director: Person
    postmaster: str
    case_tag: str
    local_domains: tuple[str, ...]
    secret_file: Path
    previous_secret_file: Path | None


@dataclass(frozen=True)
class SmtpSettings:
    listen: HostPort
    hostname: str
    max_message_size: int
    max_connections: int
    max_recipients: int
    timeout: timedelta
    tls_certificate: Path | None
    tls_key: Path | None


@dataclass(frozen=True)
class RelaySettings:
    upstream: HostPort
    upstream_protocol: str
    lists: tuple[str, ...]
    list_domains: tuple[str, ...]
    ban_action: str
    hold_days: int


@dataclass(frozen=True)
class OutboundSettings:
    smarthost: HostPort | None
    maildir: Path | None
    tls: str
    username: str | None
    password_file: Path | None
    retry_after: timedelta


@dataclass(frozen=True)
class ImapSettings:
    enabled: bool
    host: str | None
    port: int
    security: str
    username: str | None
    password_file: Path | None
    folder: str
    processed_folder: str
    poll_interval: timedelta


@dataclass(frozen=True)
class StorageSettings:
    url: str
    leader_lease: timedelta

    @property
    def is_postgresql(self) -> bool:
        return self.url.startswith("postgresql")


@dataclass(frozen=True)
class ReminderSettings:
    acknowledge_within: timedelta
    urgent_repeat: timedelta
    escalate_within: timedelta
    follow_up_after: timedelta
    digest_at: time
    timezone: ZoneInfo


@dataclass(frozen=True)
class RetentionSettings:
    no_violation: timedelta
    resolved: timedelta
    flagged: timedelta
    banned_extra: timedelta


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its file; passed explicitly, never global."""

    path: Path
    gateway: GatewaySettings
    smtp: SmtpSettings
    relay: RelaySettings
    moderators: Mapping[str, tuple[str, ...]]
    outbound: OutboundSettings
    imap: ImapSettings
    storage: StorageSettings
    reminders: ReminderSettings
    policy_listen: HostPort | None
    require_dkim: bool
    retention: RetentionSettings
    metrics_listen: HostPort | None
    log_level: str
    log_format: str


# Every key of every section with its default; None marks a required key. Unknown
# sections and keys are errors (a typo must not silently leave a default in force).
SCHEMA: dict[str, dict[str, str | None]] = {
    "gateway": {
        "conduct_address": None,
        "staff": None,
        "executive_director": None,
        "postmaster": "",
        "case_tag": "Conduct",
        "local_domains": "",
        "secret_file": "/var/lib/conduct-gateway/secret",
        "previous_secret_file": "",
    },
    "smtp": {
        "listen": "127.0.0.1:2525",
        "hostname": "",
        "max_message_size": "25M",
        "max_connections": "100",
        "max_recipients": "100",
        "timeout": "5m",
        "tls_certificate": "",
        "tls_key": "",
    },
    "relay": {
        "upstream": "127.0.0.1:8024",
        "upstream_protocol": "lmtp",
        "lists": "",
        "list_domains": "",
        "ban_action": "reject",
        "hold_days": "14",
    },
    "outbound": {
        "smarthost": "127.0.0.1:25",
        "tls": "opportunistic",
        "username": "",
        "password_file": "",
        "retry_after": "1m",
    },
    "imap": {
        "enabled": "no",
        "host": "",
        "port": "993",
        "security": "ssl",
        "username": "",
        "password_file": "",
        "folder": "INBOX",
        "processed_folder": "Processed",
        "poll_interval": "60s",
    },
    "storage": {
        "url": "sqlite:////var/lib/conduct-gateway/gateway.db",
        "leader_lease": "30s",
    },
    "reminders": {
        "acknowledge_within": "24h",
        "urgent_repeat": "1h",
        "escalate_within": "72h",
        "follow_up_after": "7d",
        "digest_at": "09:00",
        "timezone": "UTC",
    },
    "policy": {"listen": ""},
    "auth": {"require_dkim": "yes"},
    "retention": {
        "no_violation": "0d",
        "resolved": "60w",
        "flagged": "112w",
        "banned_extra": "112w",
    },
    "metrics": {"listen": ""},
    "logging": {"level": "info", "format": "text"},
}
FREE_FORM_SECTIONS = {"moderators"}
