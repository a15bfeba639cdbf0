"""Start-up checks of the files the configuration names: present, readable, and loadable."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.config import ConfigError, Settings


def check(settings: Settings) -> None:
    """Raise ConfigError naming file, section and key for the first file that would fail.

    `serve`, `check-config` and SIGHUP run this, so that a missing certificate or
    password file stops start-up with exit 2 (issue 2) rather than failing later, after
    migrations, or at the first connection that needs it. `ingest` does not: it must
    store mail whatever the state of files it never reads.
    """
    _check_secrets(settings)
    _check_tls(settings)
    outbound = settings.outbound
    if outbound.smarthost is not None and outbound.password_file is not None:
        _readable(settings, outbound.password_file, "outbound", "password_file")
    imap = settings.imap
    if imap.enabled and imap.password_file is not None:
        _readable(settings, imap.password_file, "imap", "password_file")


def _check_secrets(settings: Settings) -> None:
    gateway = settings.gateway
    current = gateway.secret_file
    # A missing secret is created by `serve` on SQLite; with PostgreSQL it must be
    # copied from another instance (SPEC section 8), which serve says itself.
    if current.exists() or current.is_symlink():
        _readable(settings, current, "gateway", "secret_file")
    elif settings.storage.is_postgresql:
        raise ConfigError(
            settings.path,
            f"{current} does not exist; instances that share a PostgreSQL database must "
            "share one secret: copy it from another instance",
            "gateway",
            "secret_file",
        )
    if gateway.previous_secret_file is not None:
        _readable(settings, gateway.previous_secret_file, "gateway", "previous_secret_file")


def _check_tls(settings: Settings) -> None:
    certificate, key = settings.smtp.tls_certificate, settings.smtp.tls_key
    if certificate is None or key is None:
        return
    _readable(settings, certificate, "smtp", "tls_certificate")
    _readable(settings, key, "smtp", "tls_key")
    # As the SMTP listener will load them (smtp_limits.tls_context); a key that does not
    # belong to the certificate fails here too.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        why = getattr(error, "reason", None) or error.strerror or type(error).__name__
        raise ConfigError(
            settings.path,
            f"{certificate} and tls_key {key} cannot be loaded as a certificate and its "
            f"private key ({why})",
            "smtp",
            "tls_certificate",
        ) from None


def _readable(settings: Settings, path: Path, section: str, key: str) -> None:
    """Open and read the file, as the running gateway will (a permission shows here too)."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise ConfigError(
            settings.path, f"cannot read {path}: {error.strerror}", section, key
        ) from None
