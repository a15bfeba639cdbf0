"""The scheduler inside a real serve: #remind by email, and a restart in the middle."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from pathlib import Path

import pytest

from tests.gateway.test_end_to_end import REPORT, Running, start
from tests.serve_process import ServeProcess, cli
from tests.sinks import Received

REMINDER_BOUND = 5 + 5  # SPEC section 2: within 5 s of its due time, plus slack


def staff_address(messages: list[Received], staff: str) -> str:
    copy = next(m for m in messages if m.rcpt_tos == (staff,))
    message = email.message_from_bytes(copy.data, policy=email.policy.default)
    return str(message["Reply-To"])


def send_command(running: Running, to: str, body: str) -> None:
    raw = (
        f"From: alice@example.org\r\nTo: {to}\r\nSubject: Re: case\r\n"
        f"Message-ID: <remind{time.monotonic_ns()}@example.org>\r\n\r\n{body}"
    ).encode()
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
        client.sendmail("alice@example.org", [to], raw)


def reminders_for(running: Running, staff: str) -> list[Received]:
    return [
        m for m in running.smarthost.messages if m.rcpt_tos == (staff,) and b"Reminder" in m.data
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_remind_by_email_and_a_restart_in_the_middle(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url)
    try:
        running.send("rita@example.net", ["conduct@example.org"], REPORT)
        found = running.smarthost.wait_for(lambda m: len(m) >= 3, REMINDER_BOUND)
        alice = staff_address(found, "alice@example.org")
        send_command(running, alice, "#remind 2s first\r\n")
        running.smarthost.wait_for(
            lambda m: (
                len([x for x in m if x.rcpt_tos == ("alice@example.org",) and b"first" in x.data])
                == 1
            ),
            2 + REMINDER_BOUND,
        )
        # A reminder that falls due while the gateway is down fires once at start.
        send_command(running, alice, "#remind 4s second\r\n")
        running.smarthost.wait_for(
            lambda m: any(b"Your commands" in x.data and b"second" in x.data for x in m), 10
        )
        assert running.serve.stop() == 0
        time.sleep(5)
        running.serve = ServeProcess(running.config).start()
        running.smarthost.wait_for(
            lambda m: (
                len(
                    [
                        x
                        for x in m
                        if x.rcpt_tos == ("alice@example.org",) and b"Note: second" in x.data
                    ]
                )
                == 1
            ),
            REMINDER_BOUND,
        )
        time.sleep(2)
        seconds = [x for x in running.smarthost.messages if b"Note: second" in x.data]
        assert len(seconds) == 1
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cases_purge_dry_run_lists_due_cases(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    running = start(tmp_path, database_url)
    try:
        running.send("rita@example.net", ["conduct@example.org"], REPORT)
        found = running.smarthost.wait_for(lambda m: len(m) >= 3, REMINDER_BOUND)
        send_command(running, staff_address(found, "alice@example.org"), "#close no-violation\r\n")
        running.serve.wait_for_log("route=command", REMINDER_BOUND)
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()
    dry = cli(running.config, "cases", "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.decode().split() == ["1"]
    done = cli(running.config, "cases", "purge")
    assert done.returncode == 0
    assert (
        cli(running.config, "cases", "purge", "--dry-run").stdout.decode().strip()
        == "no case is due"
    )
    assert cli(running.config, "audit", "verify").returncode == 0
