from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[3]


class Worker:
    """A lockworker process; its stdout is read line by line as JSON."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self) -> dict:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"worker {self.pid} exited without output: {stderr}")
            if line.startswith("{"):  # the service's logs go to stdout too
                return json.loads(line)

    def send(self, line: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()


@pytest.fixture
def worker_env() -> dict[str, str]:
    """The test run's Redis db for worker processes (their settings.test would pick the same db)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "REDIS_URL": settings.CACHES["default"]["LOCATION"],
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def spawn_worker(worker_env: dict[str, str]) -> Iterator[Callable[..., Worker]]:
    started: list[subprocess.Popen] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.lifecycle.locks.lockworker", *args],
            cwd=ROOT,
            env={**worker_env, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return Worker(process)

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
