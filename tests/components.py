"""Real components the tests need: a missing one skips locally and fails under CI=true."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "CONDUCT_GATEWAY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def missing(component: str, why: str) -> NoReturn:
    """CI must never hide a missing component behind a skip."""
    message = f"{component} is not available: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing real component is a failure)")
    pytest.skip(message)


def free_port() -> int:
    """A port the OS just handed out on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
