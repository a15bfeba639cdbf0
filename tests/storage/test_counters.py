"""Case numbers go up by one with no gaps, also when transactions race or roll back."""

from __future__ import annotations

import threading

import pytest

from storage.counters import peek, take_next
from storage.db import Database


def test_a_rolled_back_number_is_given_again(db: Database) -> None:
    with db.transaction() as session:
        assert take_next(session, "case") == 1

    def open_a_case_that_fails() -> None:
        with db.transaction() as session:
            assert take_next(session, "case") == 2
            raise RuntimeError("the case could not be opened")

    with pytest.raises(RuntimeError):
        open_a_case_that_fails()
    with db.transaction() as session:
        assert take_next(session, "case") == 2


def test_racing_transactions_get_distinct_consecutive_numbers(db: Database) -> None:
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            with db.transaction() as session:
                number = take_next(session, "case")
            with lock:
                taken.append(number)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == list(range(1, 41))
    with db.transaction() as session:
        assert peek(session, "case") == 40
