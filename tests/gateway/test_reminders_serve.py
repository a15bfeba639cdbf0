"""Reminders fired by a real `serve` into a real smarthost sink, with periods in seconds
(SPEC section 7; section 2: a reminder fires within 5 s of its due time)."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.components import free_port
from tests.gateway.gateway_setup import write_config
from tests.gateway.test_end_to_end import Running
from tests.gateway.test_scheduler_serve import send_command
from tests.serve_process import ServeProcess
from tests.sinks import Received, Sink

BOUND = 5 + 5  # SPEC: within 5 s of the due time, plus slack for a loaded machine
REMINDERS = """[reminders]
acknowledge_within = 6s
urgent_repeat = 3s
escalate_within = 8s
"""


def start(tmp_path: Path, url: str) -> Running:
    smarthost = Sink().start()
    upstream = Sink().start()
    port = free_port()
    path = write_config(
        tmp_path,
        url,
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        smtp_port=port,
        extra=REMINDERS,
    )
    path.write_text(
        path.read_text().replace("[outbound]\n", "[outbound]\nretry_after = 1s\ntls = none\n")
    )
    (tmp_path / "secret").write_bytes(b"s" * 32)
    return Running(ServeProcess(path).start(), smarthost, upstream, port, path)


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Running]:
    gateway = start(tmp_path, database_url)
    yield gateway
    assert gateway.serve.stop() == 0
    gateway.smarthost.stop()
    gateway.upstream.stop()


def subject(message: Received) -> str:
    return str(email.message_from_bytes(message.data, policy=email.policy.default)["Subject"])


def report(running: Running, n: int) -> str:
    """Open case `n`; the Reply-To of alice's copy (her signed address on it)."""
    raw = (
        f"From: Rita <rita@example.net>\r\nTo: conduct@example.org\r\nSubject: Report {n}\r\n"
        f"Message-ID: <serve-rem-{n}@example.net>\r\n\r\nSomething happened ({n}).\r\n"
    ).encode()
    running.send("rita@example.net", ["conduct@example.org"], raw)
    found = running.smarthost.wait_for(
        lambda m: any(x.rcpt_tos == ("alice@example.org",) and f"#{n}]" in subject(x) for x in m),
        BOUND,
    )
    copy = next(x for x in found if x.rcpt_tos == ("alice@example.org",) and f"#{n}]" in subject(x))
    return str(email.message_from_bytes(copy.data, policy=email.policy.default)["Reply-To"])


def reminders(running: Running, case: int, words: str, to: str = "alice@example.org") -> int:
    return len(
        [
            m
            for m in running.smarthost.messages
            if m.rcpt_tos == (to,)
            and subject(m).startswith(f"[Conduct #{case}] Reminder")
            and words in subject(m)
        ]
    )


def wait_count(
    running: Running,
    at_least: int,
    timeout: float,
    case: int,
    words: str,
    to: str = "alice@example.org",
) -> None:
    running.smarthost.wait_for(lambda _m: reminders(running, case, words, to) >= at_least, timeout)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_acknowledge_repeats_and_a_staff_command_first_prevents_it(
    running: Running, backend: str
) -> None:
    report(running, 1)
    second = report(running, 2)
    send_command(running, second, "#status investigating\r\n")  # before the 6 s are up
    wait_count(running, 1, 6 + BOUND, 1, "no staff reply yet")
    wait_count(running, 2, 6 + BOUND, 1, "no staff reply yet")
    assert reminders(running, 1, "no staff reply yet", "bob@example.org") >= 2
    assert reminders(running, 2, "no staff reply yet") == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_urgent_pages_repeat_to_the_director_until_a_reply(running: Running, backend: str) -> None:
    alice = report(running, 1)
    send_command(running, alice, "#urgent\r\n")
    wait_count(running, 2, 2 * 3 + BOUND, 1, "URGENT", "ed@example.org")
    send_command(running, alice, "#reply\r\nWe are on it.\r\n")
    running.smarthost.wait_for(
        lambda m: any(x.rcpt_tos == ("rita@example.net",) and b"We are on it" in x.data for x in m),
        BOUND,
    )
    time.sleep(2)  # a page queued before the reply's commit may still be on its way
    pages = reminders(running, 1, "URGENT", "ed@example.org")
    time.sleep(3 * 3)
    assert reminders(running, 1, "URGENT", "ed@example.org") == pages


@pytest.mark.parametrize("backend", ["sqlite"])
def test_escalation_ban_end_and_sanction_end_fire(running: Running, backend: str) -> None:
    alice = report(running, 1)
    send_command(
        running,
        alice,
        "#ban mallory@example.com for=4s\r\n#sanction no-contact for=4s\r\n",
    )
    wait_count(running, 1, 4 + BOUND, 1, "a ban of this case has ended")
    wait_count(running, 1, 4 + BOUND, 1, "a sanction of this case has ended")
    wait_count(running, 1, 8 + BOUND, 1, "not yet escalated")
    assert reminders(running, 1, "not yet escalated", "bob@example.org") >= 1
    time.sleep(2)
    assert reminders(running, 1, "a ban of this case has ended") == 1
