"""A private Postfix for tests (REAL-COMPONENTS.md): own directories, loopback, stopped by pid.

Never touches /etc/postfix or a system instance, and never runs `postfix set-permissions`
(a private config directory would be treated as the primary instance and shared files
such as /usr/sbin/postdrop changed).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.components import free_port, missing

POSTFIX = Path("/usr/sbin/postfix")
MASTER = Path("/usr/lib/postfix/sbin/master")
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# chroot `n` everywhere: Debian's stock file chroots smtpd, which needs a populated chroot.
# Columns: service type private unpriv chroot wakeup maxproc command.
_SERVICES = """\
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
showq     unix  n - n -     - showq
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    for binary in (POSTFIX, MASTER):
        if not os.access(binary, os.X_OK):
            return f"{binary} not found (Debian package postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root here"
    return None


class PrivatePostfix:
    """One Postfix instance under `base`; its smtpd listens on `HOST:port`.

    `main` adds to or overrides main.cf; `smtpd_options` become `-o` options on the
    smtpd line (e.g. `smtpd_proxy_filter`); `services` are extra master.cf lines.
    """

    def __init__(
        self,
        base: Path,
        *,
        relay_domains: Sequence[str],
        relayhost: tuple[str, int],
        recipient_restrictions: Sequence[str],
        main: Mapping[str, str] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
        services: Sequence[str] = (),
    ) -> None:
        self.base = base
        self.port = free_port()
        self.config_directory = base / "etc"
        self.queue_directory = base / "spool"
        self.maillog_path = base / "maillog"
        self._output = base / "master.out"
        self._process: subprocess.Popen[bytes] | None = None
        relay_host, relay_port = relayhost
        self.main: dict[str, str] = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_directory),
            "queue_directory": str(self.queue_directory),
            # Created by `postfix check` with the right owner: never create it ourselves.
            "data_directory": str(base / "data"),
            "myhostname": "postfix.test.invalid",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": ", ".join(relay_domains),
            "relayhost": f"[{relay_host}]:{relay_port}",
            "smtputf8_enable": "no",
            "smtpd_recipient_restrictions": ", ".join(recipient_restrictions),
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(base),
            # Tests want quick retries and no waiting on DNS.
            "smtp_dns_support_level": "disabled",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
        }
        self.main.update(main or {})
        self.smtpd_options = dict(smtpd_options or {})
        self.services = tuple(services)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def write_config(self) -> None:
        self.config_directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{key} = {value}" for key, value in self.main.items()]
        (self.config_directory / "main.cf").write_text("\n".join(lines) + "\n")
        options = "".join(f"\n  -o {key}={value}" for key, value in self.smtpd_options.items())
        smtpd = f"{HOST}:{self.port} inet n - n - - smtpd{options}\n"
        extra = "".join(line.rstrip("\n") + "\n" for line in self.services)
        (self.config_directory / "master.cf").write_text(smtpd + _SERVICES + extra)
        # Postfix waits about 2 s at start when main.cf is younger than 2 s.
        past = time.time() - 60
        for path in self.config_directory.iterdir():
            os.utime(path, (past, past))

    def start(self) -> None:
        self.write_config()
        # The queue directory is root's and must exist; `postfix check` fills it in.
        self.queue_directory.mkdir(mode=0o755, exist_ok=True)
        # Creates the missing queue and data directories with their owners.
        checked = subprocess.run(
            [str(POSTFIX), "-c", str(self.config_directory), "check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"postfix check failed: {checked.stderr or self.maillog()}")
        with self._output.open("wb") as output:
            self._process = subprocess.Popen(
                [str(MASTER), "-c", str(self.config_directory), "-d"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postfix master exited: {self.diagnostics()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postfix did not listen within {START_TIMEOUT}s: {self.diagnostics()}")

    def stop(self) -> None:
        """SIGTERM to the master, which ends its children; `postfix stop` can take 2 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Its own session: this reaches the master and every daemon it started.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def maillog(self) -> str:
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self) -> str:
        output = self._output.read_text(errors="replace") if self._output.exists() else ""
        return f"master output: {output[-2000:]!r}; maillog: {self.maillog()[-4000:]!r}"

    def wait_for_log(self, text: str, timeout: float = 20.0) -> bool:
        """Whether `text` appears in the mail log within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.maillog():
                return True
            time.sleep(0.1)
        return text in self.maillog()


@contextmanager
def private_postfix(
    *,
    relay_domains: Sequence[str],
    relayhost: tuple[str, int],
    recipient_restrictions: Sequence[str],
    main: Mapping[str, str] | None = None,
    smtpd_options: Mapping[str, str] | None = None,
    services: Sequence[str] = (),
) -> Iterator[PrivatePostfix]:
    """A running private Postfix; skipped locally and failed under CI=true when missing."""
    why = available()
    if why is not None:
        missing("Postfix", why)
    # mkdtemp's 0700 keeps the postfix user out ("open lock file ... Permission denied"),
    # and pytest's tmp_path sits under a 0700 directory, so use our own 0755 base.
    base = Path(tempfile.mkdtemp(prefix="cgw-postfix-"))
    base.chmod(0o755)
    postfix = PrivatePostfix(
        base,
        relay_domains=relay_domains,
        relayhost=relayhost,
        recipient_restrictions=recipient_restrictions,
        main=main,
        smtpd_options=smtpd_options,
        services=services,
    )
    try:
        postfix.start()
        yield postfix
    finally:
        postfix.stop()
        shutil.rmtree(base, ignore_errors=True)
