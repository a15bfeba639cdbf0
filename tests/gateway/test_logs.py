"""The log of a real `serve` (SPEC section 10): one parseable line per event, and at info no
reporter or banned sender address, no message body and no secret; addresses at debug only."""

from __future__ import annotations

import ast
import base64
import email
import email.policy
import json
import os
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.components import free_port
from tests.gateway.gateway_setup import write_config
from tests.serve_process import ServeProcess, cli
from tests.sinks import Sink

REPORTER = "zelda.quill-7731@example.net"
BANNED = "banned.sender-5521@example.com"
REPORT_BODY = "purple elephant marmalade 4242"
REPLY_BODY = "turquoise giraffe lantern 9090"
POST_BODY = "banned words never to be logged 6060"
REPORT = (
    f"From: Zelda Quill <{REPORTER}>\r\nTo: conduct@example.org\r\n"
    f"Subject: At the sprint\r\nMessage-ID: <logs-report-1@example.net>\r\n\r\n"
    f"{REPORT_BODY}\r\n"
).encode()
POST = (
    f"From: <{BANNED}>\r\nTo: dev@lists.example.org\r\nSubject: hi\r\n"
    f"Message-ID: <logs-post-1@example.com>\r\n\r\n{POST_BODY}\r\n"
).encode()
LEVELS = {"debug", "info", "warning", "error", "critical"}
# key=value, the value bare or a JSON string (gateway/logs.py `_quote`).
_PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)(?: |$)')


@dataclass
class Run:
    serve: ServeProcess
    smarthost: Sink
    upstream: Sink
    port: int
    config: Path
    secret: bytes

    def send(self, sender: str, recipients: list[str], data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(sender, recipients, data)


def start(tmp_path: Path, url: str, level: str, fmt: str) -> Run:
    smarthost, upstream, port = Sink().start(), Sink().start(), free_port()
    path = write_config(
        tmp_path,
        url,
        smarthost=f"127.0.0.1:{smarthost.port}",
        upstream=f"127.0.0.1:{upstream.port}",
        smtp_port=port,
    )
    text = path.read_text().replace("[outbound]\n", "[outbound]\ntls = none\nretry_after = 1s\n")
    path.write_text(text + f"[logging]\nlevel = {level}\nformat = {fmt}\n")
    secret = os.urandom(32)
    (tmp_path / "secret").write_bytes(secret)
    ready = '"event": "ready"' if fmt == "json" else "event=ready"
    serve = ServeProcess(path).start(ready=ready)
    return Run(serve, smarthost, upstream, port, path, secret)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.serve.stop()
        run.smarthost.stop()
        run.upstream.stop()


def parse_line(line: str, fmt: str) -> dict[str, Any]:
    if fmt == "json":
        data = json.loads(line)
        assert isinstance(data, dict)
        return data
    data = {}
    end = 0
    for match in _PAIR.finditer(line):
        assert match.start() == end, f"not key=value at {end}: {line!r}"
        value = match.group(2)
        data[match.group(1)] = json.loads(value) if value.startswith('"') else value
        end = match.end()
    assert end == len(line), f"not key=value at {end}: {line!r}"
    return data


def parsed_log(run: Run, fmt: str) -> list[dict[str, Any]]:
    lines = run.serve.log.splitlines()
    assert lines
    events = [parse_line(line, fmt) for line in lines]
    for event in events:
        assert event.get("event"), event
        assert event.get("level") in LEVELS, event
    return events


def secret_forms(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b32encode(secret).decode().rstrip("="),
        base64.b32encode(secret).decode().rstrip("=").lower(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]


def exercise(run: Run) -> None:
    """A report, a staff reply to it and a post from a banned sender."""
    run.send(REPORTER, ["conduct@example.org"], REPORT)
    found = run.smarthost.wait_for(lambda m: len(m) >= 3, 15)
    [copy] = [m for m in found if m.rcpt_tos == ("alice@example.org",)]
    reply_to = str(email.message_from_bytes(copy.data, policy=email.policy.default)["Reply-To"])
    staff_reply = (
        f"From: Alice Example <alice@example.org>\r\nTo: {reply_to}\r\n"
        f"Subject: Re: At the sprint\r\nMessage-ID: <logs-reply-1@example.org>\r\n\r\n"
        f"#reply\r\n{REPLY_BODY}\r\n"
    ).encode()
    run.send("alice@example.org", [reply_to], staff_reply)
    run.smarthost.wait_for(lambda m: sum(x.rcpt_tos == (REPORTER,) for x in m) >= 2, 15)
    added = cli(run.config, "bans", "add", BANNED, "--reason", "spam")
    assert added.returncode == 0, added.stderr
    deadline = time.monotonic() + 5
    while run.serve.log.count("bans-loaded") < 2:  # the running index now has the ban
        assert time.monotonic() < deadline, "the ban did not take effect"
        time.sleep(0.1)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        run.send(BANNED, ["dev@lists.example.org"], POST)
    assert run.upstream.messages == []


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_at_info_no_address_body_or_secret_and_every_line_parses(
    tmp_path: Path, backend: str, database_url: str, fmt: str, runs: list[Run]
) -> None:
    run = start(tmp_path, database_url, "info", fmt)
    runs.append(run)
    exercise(run)
    assert run.serve.stop() == 0
    events = parsed_log(run, fmt)
    names = [e["event"] for e in events]
    assert {"ready", "smtp-route", "processed", "ban-hit", "delivered", "stopped"} <= set(names)
    assert "debug" not in {e["level"] for e in events}
    opened = [e for e in events if e["event"] == "processed" and e.get("case") not in (None, "")]
    assert {str(e["case"]) for e in opened} == {"1"}  # case numbers and Message-IDs instead
    assert any(e.get("message_id") for e in opened)
    hits = [e for e in events if e["event"] == "ban-hit"]
    assert hits
    assert all(e.get("ban") is not None for e in hits)
    text = run.serve.log
    lowered = text.lower()
    for forbidden in (REPORTER, "zelda.quill", BANNED, "banned.sender", "alice@example.org"):
        assert forbidden not in lowered, forbidden
    for body in (REPORT_BODY, REPLY_BODY, POST_BODY, "purple", "turquoise"):
        assert body not in text, body
    for form in secret_forms(run.secret):
        assert form not in text


@pytest.mark.parametrize("backend", ["sqlite"])
def test_at_debug_addresses_appear_but_never_a_body_or_the_secret(
    tmp_path: Path, backend: str, database_url: str, runs: list[Run]
) -> None:
    run = start(tmp_path, database_url, "debug", "text")
    runs.append(run)
    run.send(REPORTER, ["conduct@example.org"], REPORT)
    run.smarthost.wait_for(lambda m: len(m) >= 3, 15)
    assert run.serve.stop() == 0
    events = parsed_log(run, "text")
    assert "debug" in {e["level"] for e in events}
    assert any(e.get("sender") == REPORTER for e in events if e["level"] == "debug")
    assert all(REPORTER not in json.dumps(e) for e in events if e["level"] != "debug")
    assert REPORT_BODY not in run.serve.log
    for form in secret_forms(run.secret):
        assert form not in run.serve.log


@pytest.mark.parametrize(("require_dkim", "warned"), [("no", True), ("yes", False)])
def test_start_up_warns_when_dkim_is_not_required(
    tmp_path: Path, require_dkim: str, warned: bool
) -> None:
    """SPEC section 8: with `require_dkim = no`, start-up logs a warning (and only then)."""
    config = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}", require_dkim=require_dkim
    )
    (tmp_path / "secret").write_bytes(os.urandom(32))
    serve = ServeProcess(config).start()
    assert serve.stop() == 0
    lines = [line for line in serve.lines if "event=dkim-not-required" in line]
    assert len(lines) == (1 if warned else 0), serve.log
    if warned:
        assert parse_line(lines[0].rstrip("\n"), "text")["level"] == "warning"
        assert serve.log.index("event=dkim-not-required") < serve.log.index("event=ready")


ROOT = Path(__file__).resolve().parents[2]
# Event names built at run time: the sender's outcome of one delivery, and the
# scheduler's `_guarded(name)` jobs, which log `name` and `name-failed`.
DYNAMIC_EVENTS = {"delivered", "deferred", "failed"}


def emitted_events() -> set[str]:
    """Every event name a `logs.event(...)` call in gateway/ can log, read from the source."""
    names: set[str] = set(DYNAMIC_EVENTS)
    for path in (ROOT / "gateway").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr == "event" and len(node.args) >= 3:
                for part in ast.walk(node.args[2]):  # a name, or `"a" if x else "b"`
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        names.add(part.value)
            elif node.func.attr == "_guarded" and node.args:
                job = node.args[0]
                if isinstance(job, ast.Constant) and isinstance(job.value, str):
                    names |= {job.value, f"{job.value}-failed"}
    names.discard("-failed")  # the f-string's literal tail, not an event
    return names


def documented_events() -> set[str]:
    """The first column of docs/operations.md's log-event table."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text.split("### Log lines", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z][a-z-]*)`", line.split("|")[1]))
    return names


def test_every_event_the_gateway_logs_is_in_the_operations_table() -> None:
    emitted = emitted_events()
    assert {"ready", "imap-purged", "lease-release-failed"} <= emitted  # the reader works
    assert sorted(emitted - documented_events()) == []
