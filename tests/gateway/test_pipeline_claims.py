"""The pipeline acts on a claimed copy only while its claim stands: one message, one case,
whatever stalls, lost answers or failures happen around it (SPEC section 2), on both backends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from gateway import pipeline as pipeline_module
from gateway.pipeline import CLAIM_LEASE, Pipeline
from storage import inbox
from storage.models import Case, InboxEntry, OutboxEntry
from tests.gateway.gateway_setup import Gateway, make_gateway
from tests.gateway.test_pipeline import REPORT, store


@pytest.fixture
def gw(tmp_path: Path, database_url: str) -> Iterator[Gateway]:
    gateway = make_gateway(tmp_path, database_url)
    yield gateway
    gateway.database.dispose()


def instance(gw: Gateway, at: datetime) -> Pipeline:
    """Another gateway instance on the same database, its clock at `at`."""
    return Pipeline(lambda: gw.settings, gw.database, gw.secrets, lambda: at)


def counts(gw: Gateway) -> tuple[int, int]:
    """(cases, outbox rows)."""
    with gw.database.transaction() as session:
        cases = session.scalar(select(func.count()).select_from(Case))
        mails = session.scalar(select(func.count()).select_from(OutboxEntry))
    return int(cases or 0), int(mails or 0)


def state(gw: Gateway, entry_id: int) -> str:
    with gw.database.transaction() as session:
        row = session.get(InboxEntry, entry_id)
        assert row is not None
        return row.state


def test_a_copy_whose_claim_ran_out_and_was_processed_elsewhere_opens_no_second_case(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Instance A claims a batch and stalls past the lease; B claims the message, processes
    it and marks it done; A's stale copy must then do nothing at all."""
    entry_id = store(gw, REPORT)
    t0 = gw.now()
    with gw.database.transaction() as session:
        [stale] = inbox.claim_due(session, t0, CLAIM_LEASE, 20)
    assert instance(gw, t0 + CLAIM_LEASE + timedelta(seconds=1)).process_batch() == 1
    after_b = counts(gw)
    assert after_b[0] == 1
    a = instance(gw, t0)
    with caplog.at_level(logging.DEBUG, logger="conduct_gateway.pipeline"):
        a.process_one(stale)
    assert counts(gw) == after_b  # no second case, acknowledgement or staff copy
    assert state(gw, entry_id) == "done"
    assert a.quarantined == 0
    assert [r.levelno for r in caplog.records if r.getMessage() == "stale-claim-skipped"] == [
        logging.DEBUG
    ]


def test_a_copy_whose_claim_was_taken_over_does_nothing_while_the_new_claim_stands(
    gw: Gateway,
) -> None:
    """B has claimed the message again but not processed it yet: A's copy leaves it to B."""
    entry_id = store(gw, REPORT)
    t0 = gw.now()
    later = t0 + CLAIM_LEASE + timedelta(seconds=1)
    with gw.database.transaction() as session:
        [stale] = inbox.claim_due(session, t0, CLAIM_LEASE, 20)
    with gw.database.transaction() as session:
        [fresh] = inbox.claim_due(session, later, CLAIM_LEASE, 20)
    instance(gw, t0).process_one(stale)
    assert counts(gw) == (0, 0)
    assert state(gw, entry_id) == "pending"
    instance(gw, later).process_one(fresh)
    assert counts(gw)[0] == 1
    assert state(gw, entry_id) == "done"


def test_a_late_failure_on_a_stale_copy_never_reopens_a_done_message(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_id = store(gw, REPORT)
    t0 = gw.now()
    later = t0 + CLAIM_LEASE + timedelta(seconds=1)
    with gw.database.transaction() as session:
        [stale] = inbox.claim_due(session, t0, CLAIM_LEASE, 20)
    assert instance(gw, later).process_batch() == 1
    real = pipeline_module.process

    def connection_died(*args: Any, **kwargs: Any) -> Any:
        raise OSError("A's connection died")

    monkeypatch.setattr(pipeline_module, "process", connection_died)
    a = instance(gw, t0)
    a.process_one(stale)
    monkeypatch.setattr(pipeline_module, "process", real)
    assert a.quarantined == 0
    assert state(gw, entry_id) == "done"
    # Long after any back-off: nothing is due, so nothing is processed again.
    assert instance(gw, later + timedelta(hours=2)).process_batch() == 0
    assert counts(gw)[0] == 1


def test_a_commit_whose_answer_is_lost_is_not_processed_again(gw: Gateway) -> None:
    """The COMMIT reaches the server, then the connection drops before its answer: the
    pipeline sees an error, yet the case, its mail and the done row are all committed."""
    entry_id = store(gw, REPORT)
    commits: list[int] = []

    def answer_lost(session: Session) -> None:
        commits.append(1)
        if len(commits) == 2:  # the first commits the claim, the second the processing
            raise OSError("server closed the connection unexpectedly")

    event.listen(Session, "after_commit", answer_lost)
    try:
        first = instance(gw, gw.now())
        assert first.process_batch() == 1
    finally:
        event.remove(Session, "after_commit", answer_lost)
    assert len(commits) >= 2
    assert first.quarantined == 0
    assert state(gw, entry_id) == "done"
    after = counts(gw)
    assert instance(gw, gw.now() + timedelta(hours=2)).process_batch() == 0
    assert counts(gw) == after == (1, after[1])


def test_a_quarantine_that_cannot_be_recorded_leaves_the_rest_of_the_batch_processed(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [
        store(gw, REPORT.replace(b"rep1@", b"rep%d@" % n).replace(b"rude", b"rude%d" % n))
        for n in range(3)
    ]
    real = pipeline_module.process
    calls = {"n": 0}

    def fail_first(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("handler bug")
        return real(*args, **kwargs)

    def database_down(*args: Any, **kwargs: Any) -> bool:
        raise OSError("the database went away")

    monkeypatch.setattr(pipeline_module, "process", fail_first)
    monkeypatch.setattr(inbox, "mark_failed", database_down)
    now = gw.now()
    assert instance(gw, now).process_batch() == 3
    assert [state(gw, i) for i in ids] == ["pending", "done", "done"]
    monkeypatch.undo()
    # Still claimed by the failed attempt; retried, never lost, once the claim runs out.
    assert instance(gw, now + CLAIM_LEASE / 2).process_batch() == 0
    assert instance(gw, now + CLAIM_LEASE).process_batch() == 1
    assert [state(gw, i) for i in ids] == ["done", "done", "done"]
    assert counts(gw)[0] == 3
