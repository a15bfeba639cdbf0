"""README's `make run` promise: `serve -c config.example.ini` takes a report by SMTP and writes
the acknowledgement to the Maildir ./var/outgoing; SIGTERM then exits 0."""

from __future__ import annotations

import email.policy
import mailbox
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.components import free_port

ROOT = Path(__file__).resolve().parents[2]
# SPEC section 2: processed within 5 s and handed on within 5 s; start-up runs migrations.
READY_BOUND = 60.0
OUTBOX_BOUND = 5 + 5
REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <make-run-1@example.net>\r\n"
    b"\r\nSomeone was rude to me after the talk.\r\n"
)


def example_in(directory: Path) -> Path:
    """The example file, word for word but for its SMTP port (tests never use fixed ports)."""
    text = (ROOT / "config.example.ini").read_text(encoding="utf-8")
    assert text.count("listen = 127.0.0.1:2525") == 1
    path = directory / "config.example.ini"
    path.write_text(text.replace("127.0.0.1:2525", f"127.0.0.1:{free_port()}"), encoding="utf-8")
    return path


def wait_until_accepting(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_BOUND
    while True:
        assert process.poll() is None, "serve exited before accepting connections"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "the SMTP port never accepted a connection"
            time.sleep(0.1)


def acknowledgements(maildir: Path) -> list[email.message.EmailMessage]:
    if not (maildir / "new").is_dir():
        return []
    box = mailbox.Maildir(maildir, factory=None, create=False)
    found = []
    for key in box.iterkeys():
        parsed = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        if parsed["To"] and "rita@example.net" in str(parsed["To"]):
            found.append(parsed)
    return found


def test_serve_with_the_example_file_acknowledges_a_report_into_the_maildir(
    tmp_path: Path,
) -> None:
    config = example_in(tmp_path)
    port = int(config.read_text().split("listen = 127.0.0.1:", 1)[1].split()[0])
    command = Path(sys.executable).with_name("conduct-gateway")  # what `make run` runs
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [str(command), "serve", "-c", config.name],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until_accepting(port, process)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.sendmail("rita@example.net", ["conduct@example.org"], REPORT) == {}
        deadline = time.monotonic() + OUTBOX_BOUND
        while not (found := acknowledgements(tmp_path / "var" / "outgoing")):
            assert time.monotonic() < deadline, "no acknowledgement in ./var/outgoing"
            time.sleep(0.1)
        assert str(found[0]["Subject"]).startswith("[Conduct #1] ")
        assert (tmp_path / "var" / "gateway.db").exists()
        assert (tmp_path / "var" / "secret").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "event=stopped" in log.read_text()
