"""A real `conduct-gateway serve` in a subprocess, its log collected, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class ServeProcess:
    def __init__(
        self,
        config: Path,
        env: dict[str, str] | None = None,
        interpreter: Sequence[str] = (sys.executable,),
    ) -> None:
        self.config = config
        self.interpreter = list(interpreter)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def start(self, ready_timeout: float = 60, ready: str = "event=ready") -> ServeProcess:
        """Start and wait for the `ready` event (`'"event": "ready"'` with JSON logs)."""
        self.launch()
        self.wait_for_log(ready, ready_timeout)
        return self

    def launch(self) -> ServeProcess:
        """Start it without waiting for readiness (a test watching $NOTIFY_SOCKET waits)."""
        self.process = subprocess.Popen(
            [*self.interpreter, "-m", "gateway", "serve", "-c", str(self.config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{self.log}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (the caller asserts it is 0)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def cli(config: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a `conduct-gateway` command against the same configuration."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )
