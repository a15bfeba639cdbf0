"""A configured gateway for integration tests: settings file, database, secret."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import config
from gateway.config import Settings
from gateway.daemon import prepare
from gateway.secret import Secrets
from storage.db import Database

BASE = """[gateway]
conduct_address = conduct@example.org
staff = Alice Example <alice@example.org>, bob@example.org
executive_director = Erin Director <ed@example.org>
postmaster = hostmaster@example.org
secret_file = secret
[storage]
url = {url}
[outbound]
smarthost = {smarthost}
[relay]
lists = dev@lists.example.org, announce@lists.example.org
upstream = {upstream}
upstream_protocol = {protocol}
ban_action = {ban_action}
[smtp]
listen = 127.0.0.1:{smtp_port}
hostname = mx.example.org
[auth]
require_dkim = {require_dkim}
"""


@dataclass
class Gateway:
    settings: Settings
    database: Database
    secrets: Secrets
    path: Path

    def now(self) -> datetime:
        return datetime.now(UTC)


def write_config(
    tmp_path: Path,
    url: str,
    *,
    smarthost: str = "maildir:out",
    upstream: str = "127.0.0.1:1",
    protocol: str = "smtp",
    ban_action: str = "reject",
    smtp_port: int = 0,
    extra: str = "",
    require_dkim: str = "no",
) -> Path:
    path = tmp_path / "gateway.ini"
    path.write_text(
        BASE.format(
            url=url,
            smarthost=smarthost,
            upstream=upstream,
            protocol=protocol,
            ban_action=ban_action,
            smtp_port=smtp_port,
            require_dkim=require_dkim,
        )
        + extra,
        encoding="utf-8",
    )
    return path


def make_gateway(tmp_path: Path, url: str, **options: object) -> Gateway:
    path = write_config(tmp_path, url, **options)  # type: ignore[arg-type]
    secret = tmp_path / "secret"
    if not secret.exists():
        # With PostgreSQL the secret is shared, never created by serve.
        secret.write_bytes(os.urandom(32))
        secret.chmod(0o600)
    settings = config.load(path)
    database, secrets = prepare(settings)
    return Gateway(settings, database, secrets, path)
