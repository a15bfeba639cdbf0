"""SIGHUP against a real `serve`: a good file applies without dropping connections, a bad one
is refused and the running configuration stays; restart-only keys keep their old value."""

from __future__ import annotations

import json
import signal
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import config
from gateway.reload import changed_keys, keep_restart_only
from tests.components import free_port
from tests.gateway.gateway_setup import write_config
from tests.gateway.test_end_to_end import Running, start

LISTS = "lists = dev@lists.example.org, announce@lists.example.org"
NEW_LISTS = LISTS + ", new@lists.example.org"
RELOAD_BOUND = 10.0


def post(number: int, to: str = "new@lists.example.org") -> bytes:
    return (
        f"From: Poster <poster@example.net>\r\nTo: {to}\r\nSubject: post {number}\r\n"
        f"Message-ID: <reload-post-{number}@example.net>\r\n\r\nhello {number}\r\n"
    ).encode()


def rewrite(running: Running, old: str, new: str, extra: str = "") -> None:
    text = running.config.read_text()
    assert old in text
    # Written whole and renamed into place: the reload never reads half a file.
    spare = running.config.with_suffix(".new")
    spare.write_text(text.replace(old, new) + extra)
    spare.replace(running.config)


def hup_and_wait(running: Running, needle: str) -> str:
    """Send SIGHUP; return the first new log line containing `needle`."""
    seen = len(running.serve.lines)
    assert running.serve.process is not None
    running.serve.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_BOUND
    while time.monotonic() < deadline:
        for line in running.serve.lines[seen:]:
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged after SIGHUP:\n{running.serve.log}")


def relayed_to(running: Running, recipient: str, count: int) -> None:
    running.upstream.wait_for(lambda m: sum(1 for x in m if x.rcpt_tos == (recipient,)) >= count, 5)


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Running]:
    gateway = start(tmp_path, database_url)
    yield gateway
    assert gateway.serve.stop() == 0
    gateway.smarthost.stop()
    gateway.upstream.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_reload_serves_a_new_list_and_an_open_connection_survives(running: Running) -> None:
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as early:
        early.ehlo()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            early.sendmail("poster@example.net", ["new@lists.example.org"], post(1))
        rewrite(running, LISTS, NEW_LISTS)
        line = hup_and_wait(running, "event=config-reloaded")
        assert "changed=relay.lists" in line
        # A new connection, then the one opened before the reload, on the same session.
        assert running.send("poster@example.net", ["new@lists.example.org"], post(2)) == {}
        relayed_to(running, "new@lists.example.org", 1)
        assert early.sendmail("poster@example.net", ["new@lists.example.org"], post(3)) == {}
        assert early.sendmail("poster@example.net", ["dev@lists.example.org"], post(4)) == {}
    relayed_to(running, "new@lists.example.org", 2)
    relayed_to(running, "dev@lists.example.org", 1)
    assert "event=config-change-needs-restart" not in running.serve.log


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_broken_file_is_refused_and_the_old_configuration_stays(running: Running) -> None:
    rewrite(running, LISTS, NEW_LISTS, "[reminders]\nacknowledge_within = soon\n")
    line = hup_and_wait(running, "event=config-reload-refused")
    assert "level=error" in line
    assert f"file={running.config}" in line
    assert "section=reminders key=acknowledge_within" in line
    # The start-up message, word for word.
    with pytest.raises(config.ConfigError) as startup:
        config.load(running.config)
    assert f"message={json.dumps(str(startup.value))}" in line
    assert running.serve.process is not None
    assert running.serve.process.poll() is None
    assert running.send("poster@example.net", ["dev@lists.example.org"], post(1, "dev")) == {}
    relayed_to(running, "dev@lists.example.org", 1)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        running.send("poster@example.net", ["new@lists.example.org"], post(2))
    # Once mended, the same file applies.
    rewrite(running, "acknowledge_within = soon", "acknowledge_within = 12h")
    assert "reminders.acknowledge_within" in hup_and_wait(running, "event=config-reloaded")
    assert running.send("poster@example.net", ["new@lists.example.org"], post(3)) == {}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_new_smtp_listen_waits_for_a_restart_while_the_rest_applies(running: Running) -> None:
    old = f"listen = 127.0.0.1:{running.smtp_port}"
    new_port = free_port()
    rewrite(running, LISTS, NEW_LISTS)
    rewrite(running, old, f"listen = 127.0.0.1:{new_port}", "[logging]\nformat = json\n")
    line = hup_and_wait(running, '"event": "config-reloaded"')
    assert json.loads(line)["changed"] == "relay.lists,logging.format"
    [waiting] = [
        json.loads(x)
        for x in running.serve.lines
        if "config-change-needs-restart" in x and x.startswith("{")
    ]
    assert (waiting["section"], waiting["key"], waiting["level"]) == ("smtp", "listen", "warning")
    assert str(new_port) not in json.dumps(waiting)  # key names, never values
    assert running.send("poster@example.net", ["new@lists.example.org"], post(1)) == {}
    relayed_to(running, "new@lists.example.org", 1)
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", new_port, timeout=5)


def test_restart_only_keys_keep_their_running_value(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///a.db", smtp_port=2525)
    running = config.load(path)
    text = path.read_text().replace("sqlite:///a.db", "sqlite:///b.db")
    text = text.replace("127.0.0.1:2525", "127.0.0.1:2526").replace(LISTS, NEW_LISTS)
    path.write_text(
        text.replace("[gateway]\n", "[gateway]\ncase_tag = Safety\nlocal_domains = example.org\n")
        + "[policy]\nlisten = 127.0.0.1:10040\n[imap]\nenabled = yes\nhost = imap.example.org\n"
        "username = u\npassword_file = pw\n[reminders]\nurgent_repeat = 2h\n"
    )
    loaded = config.load(path)
    applied, waiting = keep_restart_only(running, loaded)
    assert waiting == [
        ("gateway", "case_tag"),
        ("smtp", "listen"),
        ("imap", "enabled"),
        ("storage", "url"),
        ("policy", "listen"),
    ]
    assert applied.gateway.case_tag == "Conduct"
    assert applied.smtp.listen == running.smtp.listen
    assert applied.storage.url == running.storage.url
    assert applied.policy_listen is None
    assert applied.imap == running.imap
    assert applied.relay.lists[-1] == "new@lists.example.org"
    assert changed_keys(running, applied) == [("relay", "lists"), ("reminders", "urgent_repeat")]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("bad_url", "shown"),
    [
        ("postgresql://gw:hunter2@db.example.org/gw", "gw:***@db.example.org"),
        ("postgresql+psycopg://gw@db.example.org:x/gw?password=hunter2", "gw?password=***"),
    ],
)
def test_a_refused_reload_never_logs_the_database_password(
    running: Running, bad_url: str, shown: str
) -> None:
    """SPEC section 10: never a secret in logs, not even in the refusal of a bad URL."""
    url = next(line for line in running.config.read_text().splitlines() if line.startswith("url"))
    rewrite(running, url, f"url = {bad_url}")
    line = hup_and_wait(running, "event=config-reload-refused")
    assert "section=storage key=url" in line
    assert shown in line
    assert "hunter2" not in running.serve.log


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_reload_naming_a_missing_password_file_is_refused(running: Running) -> None:
    """Issue 2: the files a configuration names are checked on SIGHUP as at start-up."""
    rewrite(running, "[outbound]\n", "[outbound]\nusername = gw\npassword_file = absent\n")
    line = hup_and_wait(running, "event=config-reload-refused")
    assert "section=outbound key=password_file" in line
    assert "cannot read" in line
    assert running.send("poster@example.net", ["dev@lists.example.org"], post(1, "dev")) == {}
