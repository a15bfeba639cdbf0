"""Fixtures shared by the end-to-end tests: a real `serve` with its sinks, and the
in-process list relay with real upstream and smarthost sinks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.list_relay_setup import ListGateway
from tests.gateway.test_end_to_end import Running, start


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[Running]:
    """A real `serve` (modules with a `gateway` of their own override this one)."""
    running = start(tmp_path, database_url)
    yield running
    assert running.serve.stop() == 0
    running.smarthost.stop()
    running.upstream.stop()


@pytest.fixture
def start_list_gateway(tmp_path: Path, database_url: str) -> Iterator[Callable[..., ListGateway]]:
    """start_list_gateway(**options) -> a running ListGateway, closed at the end of the test."""
    started: list[ListGateway] = []

    def _start(**options: Any) -> ListGateway:
        gateway = ListGateway(tmp_path, database_url, **options)
        started.append(gateway)
        return gateway

    yield _start
    for gateway in started:
        gateway.close()
