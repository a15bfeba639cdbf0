"""Renders the effective configuration as INI for `check-config`, with secrets masked."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

from gateway.config import Settings
from gateway.config_values import HostPort, Person, mask_password
from rules.durations import format_duration


def render(settings: Settings) -> str:
    g, s, r, o, i = (
        settings.gateway,
        settings.smtp,
        settings.relay,
        settings.outbound,
        settings.imap,
    )
    rem, ret = settings.reminders, settings.retention
    sections: list[tuple[str, list[tuple[str, object]]]] = [
        (
            "gateway",
            [
                ("conduct_address", g.conduct_address),
                ("staff", g.staff),
                ("executive_director", g.executive_director),
                ("postmaster", g.postmaster),
                ("case_tag", g.case_tag),
                ("local_domains", g.local_domains),
                ("secret_file", g.secret_file),
                ("previous_secret_file", g.previous_secret_file),
            ],
        ),
        (
            "smtp",
            [
                ("listen", s.listen),
                ("hostname", s.hostname),
                ("max_message_size", s.max_message_size),
                ("max_connections", s.max_connections),
                ("max_recipients", s.max_recipients),
                ("timeout", s.timeout),
                ("tls_certificate", s.tls_certificate),
                ("tls_key", s.tls_key),
            ],
        ),
        (
            "relay",
            [
                ("upstream", r.upstream),
                ("upstream_protocol", r.upstream_protocol),
                ("lists", r.lists),
                ("list_domains", r.list_domains),
                ("ban_action", r.ban_action),
                ("hold_days", r.hold_days),
            ],
        ),
        ("moderators", list(settings.moderators.items())),
        (
            "outbound",
            [
                ("smarthost", f"maildir:{o.maildir}" if o.maildir else o.smarthost),
                ("tls", o.tls),
                ("username", o.username),
                ("password_file", o.password_file),
                ("retry_after", o.retry_after),
            ],
        ),
        (
            "imap",
            [
                ("enabled", "yes" if i.enabled else "no"),
                ("host", i.host),
                ("port", i.port),
                ("security", i.security),
                ("username", i.username),
                ("password_file", i.password_file),
                ("folder", i.folder),
                ("processed_folder", i.processed_folder),
                ("poll_interval", i.poll_interval),
            ],
        ),
        (
            "storage",
            [
                ("url", mask_password(settings.storage.url)),
                ("leader_lease", settings.storage.leader_lease),
            ],
        ),
        (
            "reminders",
            [
                ("acknowledge_within", rem.acknowledge_within),
                ("urgent_repeat", rem.urgent_repeat),
                ("escalate_within", rem.escalate_within),
                ("follow_up_after", rem.follow_up_after),
                ("digest_at", rem.digest_at),
                ("timezone", rem.timezone.key),
            ],
        ),
        ("policy", [("listen", settings.policy_listen)]),
        ("auth", [("require_dkim", "yes" if settings.require_dkim else "no")]),
        (
            "retention",
            [
                ("no_violation", ret.no_violation),
                ("resolved", ret.resolved),
                ("flagged", ret.flagged),
                ("banned_extra", ret.banned_extra),
            ],
        ),
        ("metrics", [("listen", settings.metrics_listen)]),
        ("logging", [("level", settings.log_level), ("format", settings.log_format)]),
    ]
    lines = [f"; effective configuration of {settings.path}"]
    for name, items in sections:
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_format(value)}".rstrip() for key, value in items)
    return "\n".join(lines) + "\n"


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, tuple):
        return ", ".join(_format(item) for item in value)
    if isinstance(value, (HostPort, Person, Path)):
        return str(value)
    return str(value)
