"""Real `manage.py worker` processes (procrastinate with the instance lifecycle)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping

from tests.support.processes import ROOT, ServiceProcess


def manage(env: Mapping[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a management command as an operator would, in the service's environment."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WorkerProcess(ServiceProcess):
    def start(self) -> WorkerProcess:
        self.spawn([sys.executable, "manage.py", "worker"])
        return self


def wait_for(predicate, *, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s")
