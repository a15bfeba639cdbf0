"""Issue 2: every file the configuration names is checked at start; exit 2 naming the key.

`serve` and `check-config` refuse a missing or unloadable certificate, key, password
or secret file before touching the database; `ingest` never reads them and still stores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config, config_files
from gateway.config import ConfigError
from tests.gateway.test_smtp_ingress import self_signed

EXE = [sys.executable, "-m", "gateway"]
BASE = (
    "[gateway]\nconduct_address = conduct@example.org\nstaff = alice@example.org\n"
    "executive_director = ed@example.org\nsecret_file = secret\n"
    "[storage]\nurl = sqlite:///gateway.db\n[smtp]\nlisten = 127.0.0.1:0\n"
)
REPORT = (
    b"From: rita@example.net\r\nTo: conduct@example.org\r\nSubject: report\r\n"
    b"Message-ID: <files-1@example.net>\r\n\r\nSomething happened.\r\n"
)


def write(
    tmp_path: Path, extra: str = "", outbound: str = "[outbound]\nsmarthost = maildir:out\n"
) -> Path:
    path = tmp_path / "gateway.ini"
    text = BASE + outbound
    # Keys of a section the base already has go into it (a section may not be given twice).
    for block in filter(None, extra.split("[")):
        header, _, keys = ("[" + block).partition("\n")
        text = (
            text.replace(header + "\n", header + "\n" + keys, 1)
            if header in text
            else text + header + "\n" + keys
        )
    path.write_text(text, encoding="utf-8")
    (tmp_path / "secret").write_bytes(os.urandom(32))
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*EXE, *args], input=stdin, capture_output=True, check=False, timeout=60)


# Each case: the configuration's extra text and the section and key the refusal names.
MISSING = [
    pytest.param(
        "[smtp]\ntls_certificate = absent.pem\ntls_key = key.pem\n",
        "[smtp] tls_certificate",
        id="certificate",
    ),
    pytest.param(
        "[smtp]\ntls_certificate = cert.pem\ntls_key = absent.pem\n", "[smtp] tls_key", id="key"
    ),
    pytest.param(
        "[smtp]\ntls_certificate = bad.pem\ntls_key = bad.pem\n",
        "[smtp] tls_certificate",
        id="unloadable",
    ),
    pytest.param(
        "[smtp]\ntls_certificate = cert.pem\ntls_key = other/key.pem\n",
        "[smtp] tls_certificate",
        id="mismatched-key",
    ),
    pytest.param(
        "[imap]\nenabled = yes\nhost = imap.example.org\nusername = u\npassword_file = absent\n",
        "[imap] password_file",
        id="imap-password",
    ),
    pytest.param(
        "[gateway]\nprevious_secret_file = absent\n",
        "[gateway] previous_secret_file",
        id="previous-secret",
    ),
]


def files(tmp_path: Path) -> None:
    self_signed(tmp_path)  # cert.pem and key.pem
    (tmp_path / "other").mkdir()
    self_signed(tmp_path / "other")
    (tmp_path / "bad.pem").write_text("not a certificate\n")


@pytest.mark.parametrize(("extra", "named"), MISSING)
def test_check_config_refuses_a_file_that_would_fail_with_exit_2(
    tmp_path: Path, extra: str, named: str
) -> None:
    files(tmp_path)
    path = write(tmp_path, extra)
    result = run("check-config", "-c", str(path))
    assert result.returncode == 2, result.stdout
    assert result.stderr.decode().startswith(f"conduct-gateway: {path}: {named}: ")


def test_a_missing_outbound_password_file_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        outbound="[outbound]\nsmarthost = 127.0.0.1:25\nusername = gw\npassword_file = absent\n",
    )
    with pytest.raises(ConfigError) as raised:
        config_files.check(config.load(path))
    assert str(raised.value).startswith(f"{path}: [outbound] password_file: cannot read ")
    assert str(tmp_path / "absent") in str(raised.value)


def test_a_directory_is_not_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").mkdir()
    path = write(
        tmp_path,
        outbound="[outbound]\nsmarthost = 127.0.0.1:25\nusername = gw\npassword_file = pw\n",
    )
    with pytest.raises(ConfigError, match=r"\[outbound\] password_file: cannot read "):
        config_files.check(config.load(path))


def test_files_a_configuration_does_not_use_are_not_required(tmp_path: Path) -> None:
    """IMAP switched off, and a Maildir instead of a smarthost: their password files lie idle."""
    path = write(
        tmp_path,
        "[imap]\nenabled = no\nhost = imap.example.org\nusername = u\npassword_file = absent\n",
        outbound="[outbound]\nsmarthost = maildir:out\nusername = gw\npassword_file = absent\n",
    )
    config_files.check(config.load(path))


def test_a_good_certificate_and_key_pass(tmp_path: Path) -> None:
    files(tmp_path)
    path = write(tmp_path, "[smtp]\ntls_certificate = cert.pem\ntls_key = key.pem\n")
    result = run("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr


def test_serve_refuses_a_bad_certificate_before_touching_the_database(tmp_path: Path) -> None:
    files(tmp_path)
    path = write(tmp_path, "[smtp]\ntls_certificate = bad.pem\ntls_key = bad.pem\n")
    result = run("serve", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}: [smtp] tls_certificate: " in result.stderr.decode()
    assert not (tmp_path / "gateway.db").exists()  # refused before migrations


def test_ingest_stores_mail_whatever_the_files_it_never_reads(tmp_path: Path) -> None:
    """`ingest` exits 75 only when it cannot store (SPEC section 9), never for a TLS file."""
    path = write(tmp_path, "[smtp]\ntls_certificate = absent.pem\ntls_key = absent.pem\n")
    assert run("db", "upgrade", "-c", str(path)).returncode == 0
    result = run("ingest", "-c", str(path), stdin=REPORT)
    assert result.returncode == 0, result.stderr


def test_check_config_refuses_a_missing_shared_secret(tmp_path: Path) -> None:
    """With PostgreSQL the secret is shared, never created (no database is reached here)."""
    path = write(tmp_path)
    (tmp_path / "secret").unlink()
    path.write_text(
        path.read_text().replace("sqlite:///gateway.db", "postgresql+psycopg://gw@db/gw")
    )
    result = run("check-config", "-c", str(path))
    assert result.returncode == 2
    assert "[gateway] secret_file: " in result.stderr.decode()
    assert "must share one secret" in result.stderr.decode()
