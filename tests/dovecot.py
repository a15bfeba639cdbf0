"""A private Dovecot for tests (REAL-COMPONENTS.md): own directories, loopback, stopped by pid.

Plain, or with SSL from a certificate made here with `cryptography` (a test CA and a
server certificate for 127.0.0.1 and localhost). Never touches /etc/dovecot or a system
instance. Each test takes its own user (`add_user`), so tests share one server safely.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imapclient import IMAPClient

from tests.components import free_port, missing

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
PASSWORD = "secret-pw"
USERS_AHEAD = 100

CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
instance_name = {instance}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap
listen = {host}
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{base}/mail/%u
mail_max_userip_connections = 200
first_valid_uid = 0
imap_idle_notify_interval = 2 mins
{capability}
{ssl}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={base}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {ssl_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-urlauth-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service submission-login {{
  chroot =
}}
"""


def available() -> str | None:
    """Why a private Dovecot cannot run here, or None when it can."""
    if not os.access(DOVECOT, os.X_OK):
        return f"{DOVECOT} not found (Debian package dovecot-imapd)"
    if not Path("/usr/lib/dovecot/imap").exists():
        return "/usr/lib/dovecot/imap not found (Debian package dovecot-imapd)"
    return None


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conduct-gateway test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class PrivateDovecot:
    """One Dovecot under `base`: IMAP on `port` (STARTTLS with SSL), IMAPS on `ssl_port`."""

    def __init__(self, base: Path, *, use_ssl: bool = False, capability: str = "") -> None:
        self.base = base
        self.use_ssl = use_ssl
        self.capability = capability
        self.port = free_port()
        self.ssl_port = free_port() if use_ssl else 0
        self.ca_file: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.instance = f"cgw-{uuid.uuid4().hex[:8]}"
        root = os.geteuid() == 0
        self.user = "nobody" if root else getpass.getuser()
        self.group = "nogroup" if root else _group_of(self.user)
        self.users: dict[str, str] = {}
        self._unused: list[str] = []

    @property
    def config_path(self) -> Path:
        return self.base / "dovecot.conf"

    def write_config(self) -> None:
        ssl_lines = "ssl = no"
        if self.use_ssl:
            ca, cert, key = make_certificate(self.base)
            self.ca_file = ca
            ssl_lines = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
        for name in ("run", "state", "mail"):
            (self.base / name).mkdir(exist_ok=True)
        shutil.chown(self.base / "mail", self.user, self.group)
        (self.base / "users").touch()
        (self.base / "users").chmod(0o644)
        self._create_users(USERS_AHEAD)
        self.config_path.write_text(
            CONFIG.format(
                base=self.base,
                instance=self.instance,
                host=HOST,
                user=self.user,
                group=self.group,
                ssl=ssl_lines,
                capability=f"imap_capability = {self.capability}" if self.capability else "",
                port=self.port,
                ssl_port=self.ssl_port,
            ),
            encoding="utf-8",
        )

    def start(self) -> None:
        if not self.config_path.exists():
            self.write_config()
        log = (self.base / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited at start:\n{self.diagnostics()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}:\n{self.diagnostics()}")

    def stop(self) -> None:
        """SIGTERM to the master, then its process group: the master alone leaves running
        IMAP processes serving their connections, as an upgrade would."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def diagnostics(self) -> str:
        parts = []
        for name in ("stdout.log", "dovecot.log"):
            path = self.base / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def _create_users(self, count: int) -> None:
        names = [f"u{uuid.uuid4().hex[:10]}" for _ in range(count)]
        with (self.base / "users").open("a", encoding="utf-8") as users:
            users.writelines(f"{name}:{{PLAIN}}{PASSWORD}\n" for name in names)
        self._unused += names

    def add_user(self) -> str:
        """A user of its own with an empty Maildir, for one test.

        Users are written ahead: Dovecot looks at the passwd-file at most once a second, so
        a user added just after a login could be refused.
        """
        if not self._unused:
            self._create_users(USERS_AHEAD)
            time.sleep(1.1)
        name = self._unused.pop()
        self.users[name] = PASSWORD
        return name

    def tls_context(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        return ssl.create_default_context(cafile=str(self.ca_file))

    @contextmanager
    def client(self, user: str) -> Iterator[IMAPClient]:
        """A plain, logged-in imapclient connection for the test's own APPENDs and checks."""
        client = IMAPClient(HOST, port=self.port, ssl=False, timeout=30)
        try:
            client.login(user, self.users[user])
            yield client
        finally:
            with contextlib.suppress(Exception):  # the server may be down on purpose
                client.logout()

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw)

    def uids(self, user: str, folder: str) -> list[int]:
        with self.client(user) as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            return sorted(int(u) for u in client.search(["NOT", "DELETED"]))


def _group_of(user: str) -> str:
    import grp

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


@contextmanager
def private_dovecot(*, use_ssl: bool = False, capability: str = "") -> Iterator[PrivateDovecot]:
    """A running private Dovecot; `missing` (skip, or fail under CI) when it cannot run.

    `capability` replaces what IMAP advertises after login (e.g. without IDLE and MOVE).
    """
    why = available()
    if why is not None:
        missing("Dovecot", why)
    # mkdtemp's 0700 would keep the unprivileged mail processes out of their Maildirs.
    base = Path(tempfile.mkdtemp(prefix="cgw-dovecot-"))
    base.chmod(0o755)
    server = PrivateDovecot(base, use_ssl=use_ssl, capability=capability)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


class FreezingProxy:
    """A loopback TCP proxy in front of a server; `freeze` makes the open connections go
    silent both ways (a server that stops answering) while new ones still pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self._frozen: set[int] = set()
        self._generation = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        with self._lock:
            self._frozen.add(self._generation)
            self._generation += 1

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target_port))
            with self._lock:
                generation = self._generation
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, generation), daemon=True
                ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, generation: int) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                frozen = generation in self._frozen
            if not frozen:
                with contextlib.suppress(OSError):
                    sink.sendall(data)

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
