"""The pipeline gives way to SMTP intake, but never for longer than its bound."""

from __future__ import annotations

import pytest

from gateway.intake_priority import IntakePriority


class FakeTime:
    """A clock that moves only when slept on; `busy` makes the ingress touch on each tick."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.busy_until = 0.0
        self.priority: IntakePriority | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0.001, seconds  # never a spin on float residues
        self.slept.append(seconds)
        self.now += seconds
        if self.priority is not None and self.now < self.busy_until:
            self.priority.touch()


def make(quiet: float = 0.02, longest: float = 0.25) -> tuple[IntakePriority, FakeTime]:
    time = FakeTime()
    priority = IntakePriority(quiet=quiet, longest=longest, clock=time.clock, sleep=time.sleep)
    time.priority = priority
    return priority, time


def test_an_idle_ingress_costs_the_pipeline_no_wait() -> None:
    priority, time = make()
    priority.give_way()
    assert time.slept == []
    assert priority.waited == 0


def test_the_pipeline_waits_until_the_ingress_has_been_quiet() -> None:
    priority, time = make(quiet=0.02)
    priority.touch()  # a transaction just now, then silence
    priority.give_way()
    assert time.slept == [pytest.approx(0.02)]
    assert priority.waited == pytest.approx(0.02)


def test_a_busy_ingress_holds_the_pipeline_back_at_most_longest() -> None:
    priority, time = make(quiet=0.02, longest=0.25)
    time.busy_until = float("inf")  # every tick sees another SMTP command
    priority.touch()
    priority.give_way()
    assert priority.waited == pytest.approx(0.25)
    priority.give_way()  # and again for the next message: processing always goes on
    assert priority.waited == pytest.approx(0.5)


def test_the_wait_ends_as_soon_as_traffic_stops() -> None:
    priority, time = make(quiet=0.02, longest=1.0)
    time.busy_until = time.now + 0.1
    priority.touch()
    priority.give_way()
    assert 0.1 <= priority.waited <= 0.12 + 1e-9


def test_release_ends_every_wait_for_shutdown() -> None:
    priority, time = make(longest=10.0)
    time.busy_until = float("inf")
    priority.touch()
    priority.release()
    priority.give_way()
    assert time.slept == []
