"""STARTTLS after a reload: a certificate renewed in place (certbot's way) is served."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import pytest

from gateway import config
from storage.db import Database
from tests.gateway.test_smtp_ingress import CONFIG, Gateway, self_signed


def served_certificate(gateway: Gateway, trusted: Path) -> bytes:
    """The DER certificate the gateway presents after STARTTLS (verified against `trusted`)."""
    context = ssl.create_default_context(cafile=str(trusted))
    with gateway.client() as client:
        assert client.starttls(context=context)[0] == 220
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_certificate_renewed_in_place_is_served_after_a_reload(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    cert_path, key_path = self_signed(old_dir)
    renewed_cert, renewed_key = self_signed(new_dir)
    path = tmp_path / "gateway.ini"
    path.write_text(CONFIG.format(url=database_url), encoding="utf-8")
    settings = config.load(path)
    settings = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(settings.smtp, tls_certificate=cert_path, tls_key=key_path),
    )
    database = Database(database_url)
    gateway = Gateway(settings, database)
    try:
        first = served_certificate(gateway, cert_path)
        cert_path.write_bytes(renewed_cert.read_bytes())
        key_path.write_bytes(renewed_key.read_bytes())
        # SIGHUP: the holder swaps in a newly read (equal) Settings object.
        gateway.settings = dataclasses.replace(settings)
        second = served_certificate(gateway, cert_path)
        assert second != first
    finally:
        gateway.close()
        database.dispose()
