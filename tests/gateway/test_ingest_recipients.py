"""`ingest` as Postfix's pipe runs it with a recipient limit above 1 (docs/operations.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.pipeline import Pipeline
from rules.tokens import reply_token
from storage.models import Case, InboxEntry, Message
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.serve_process import cli

REPORT = (
    b"From: Rita Reporter <rita@example.net>\r\nTo: conduct@example.org\r\n"
    b"Subject: Harassment at the meetup\r\nMessage-ID: <pipe-rep1@example.net>\r\n"
    b"\r\nSomeone was rude to me at the talk.\r\n"
)


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def process(gw: Gateway) -> None:
    pipeline = Pipeline(lambda: gw.settings, gw.database, gw.secrets, gw.now)
    while pipeline.process_batch():
        pass


def pipe_ingest(gw: Gateway, raw: bytes, sender: str, *recipients: str) -> None:
    # pipe(8) expands the one argument `--recipient=${recipient}` to one per recipient.
    args = [f"--recipient={r}" for r in recipients]
    result = cli(gw.path, "ingest", "--sender", sender, *args, stdin=raw)
    assert result.returncode == 0, result.stderr


def test_one_pipe_run_with_every_recipient_routes_by_the_most_specific(gw: Gateway) -> None:
    pipe_ingest(gw, REPORT, "rita@example.net", "conduct@example.org")
    process(gw)
    signed = f"conduct+1-{reply_token(gw.secrets.current, 1, 'rita@example.net')}@example.org"
    reply = (
        b"From: rita@example.net\r\nTo: conduct@example.org\r\nCc: " + signed.encode() + b"\r\n"
        b"Subject: More\r\nMessage-ID: <pipe-rep2@example.net>\r\n\r\nMore details.\r\n"
    )
    # The bare address first, as Postfix may order them: the signed one still decides.
    pipe_ingest(gw, reply, "rita@example.net", "conduct@example.org", signed)
    with gw.database.transaction() as session:
        rows = list(session.execute(select(InboxEntry).order_by(InboxEntry.id)).scalars())
    assert json.loads(rows[-1].envelope_recipients) == ["conduct@example.org", signed]
    process(gw)
    with gw.database.transaction() as session:
        assert len(session.execute(select(Case)).scalars().all()) == 1
        filed = session.execute(
            select(Message.case_number, Message.rule).where(
                Message.message_id == "pipe-rep2@example.net"
            )
        ).one()
    assert tuple(filed) == (1, "signed-address")


@pytest.mark.parametrize("given", [True, False], ids=["--sender", "return-path"])
def test_an_unusable_sender_or_a_nul_in_the_message_id_is_stored_with_exit_0(
    gw: Gateway, given: bool
) -> None:
    """PostgreSQL refused both values, so `ingest` exited 75 and the MTA retried forever."""
    long_sender = "x" * 330 + "@example.net"
    raw = REPORT.replace(b"<pipe-rep1@", b"<pipe-\x00rep1@")
    args = ["--sender", long_sender] if given else []
    if not given:
        raw = b"Return-Path: <" + long_sender.encode() + b">\r\n" + raw
    for _ in range(2):  # the MTA's retry is the same row
        result = cli(gw.path, "ingest", *args, stdin=raw)
        assert result.returncode == 0, result.stderr
    with gw.database.transaction() as session:
        [row] = session.execute(select(InboxEntry)).scalars()
        assert (row.raw, row.envelope_sender) == (raw, None)
        assert row.message_id == "pipe-\ufffdrep1@example.net"  # as every text column stores NUL
