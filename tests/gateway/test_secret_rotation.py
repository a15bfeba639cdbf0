"""Secret rotation end to end (SPEC section 8): a real `serve` is restarted with a new secret
and `previous_secret_file`; replies to addresses signed with the old one still reach their
case, and a staff member's commands through their old address still work."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from sqlalchemy import select

from storage.db import Database
from storage.models import AuditEvent
from tests.gateway.test_end_to_end import OUTBOX_BOUND, REPORT, Running, start
from tests.serve_process import ServeProcess, cli
from tests.sinks import Received

OLD_SECRET = b"o" * 32
NEW_SECRET = b"n" * 32


def reply_to(messages: list[Received], recipient: str) -> str:
    """The Reply-To of the latest mail the gateway sent `recipient`: its signed address."""
    mine = [m for m in messages if m.rcpt_tos == (recipient,)]
    assert mine, f"no mail to {recipient}"
    parsed = email.message_from_bytes(mine[-1].data, policy=email.policy.default)
    return str(parsed["Reply-To"].addresses[0].addr_spec)


def case_json(running: Running, number: int) -> dict[str, object]:
    shown = cli(running.config, "cases", "show", str(number), "--json")
    assert shown.returncode == 0, shown.stderr
    result: dict[str, object] = json.loads(shown.stdout)
    return result


def rotate(running: Running) -> None:
    """Stop, move the secret aside as the previous one, write a new one, start again."""
    assert running.serve.stop() == 0
    directory = running.config.parent
    (directory / "secret").rename(directory / "secret.old")
    (directory / "secret").write_bytes(NEW_SECRET)
    text = running.config.read_text()
    running.config.write_text(
        text.replace(
            "secret_file = secret\n", "secret_file = secret\nprevious_secret_file = secret.old\n"
        )
    )
    running.serve = ServeProcess(running.config).start()


def test_after_a_rotation_old_signed_addresses_reach_their_case_and_command_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    (tmp_path / "secret").write_bytes(OLD_SECRET)
    running = start(tmp_path, url)
    try:
        running.send("rita@example.net", ["conduct@example.org"], REPORT)
        sent = running.smarthost.wait_for(lambda m: len(m) >= 3, OUTBOX_BOUND)
        rita_old = reply_to(sent, "rita@example.net")
        alice_old = reply_to(sent, "alice@example.org")
        assert rita_old.startswith("conduct+1-")
        rotate(running)

        database = Database(url)
        try:
            with database.transaction() as session:
                actions = session.execute(select(AuditEvent.action)).scalars().all()
        finally:
            database.dispose()
        assert actions.count("secret-rotated") == 1

        seen = len(running.smarthost.messages)
        reply = (
            b"From: Rita Reporter <rita@example.net>\r\nTo: " + rita_old.encode() + b"\r\n"
            b"Subject: Re: [Conduct #1] A message from the Conduct team\r\n"
            b"Message-ID: <rotation-reply@example.net>\r\n\r\nOne more thing.\r\n"
        )
        assert running.send("rita@example.net", [rita_old], reply) == {}
        # The reply joins case 1 (no new case) and is forwarded to staff, newly signed.
        sent = running.smarthost.wait_for(lambda m: len(m) >= seen + 2, OUTBOX_BOUND)
        alice_new = reply_to(sent, "alice@example.org")
        assert alice_new.startswith("conduct+1-")
        assert alice_new != alice_old  # signed with the new secret
        case = case_json(running, 1)
        ids = [m["message_id"] for m in case["messages"]]  # type: ignore[attr-defined]
        assert "rotation-reply@example.net" in ids
        assert cli(running.config, "cases", "show", "2").returncode != 0  # no second case

        command = (
            b"From: Alice Example <alice@example.org>\r\nTo: " + alice_old.encode() + b"\r\n"
            b"Subject: Re: [Conduct #1]\r\nMessage-ID: <rotation-command@example.org>\r\n"
            b"\r\n#status investigating\r\n"
        )
        assert running.send("alice@example.org", [alice_old], command) == {}
        running.smarthost.wait_for(
            lambda m: any(
                b"#status investigating" in x.data and x.rcpt_tos == ("alice@example.org",)
                for x in m
            ),
            OUTBOX_BOUND,
        )  # the result mail
        assert case_json(running, 1)["status"] == "investigating"
    finally:
        assert running.serve.stop() == 0
        running.smarthost.stop()
        running.upstream.stop()
