"""Real gunicorn instances of the service, started as a platform would start them."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from tests.support.processes import ServiceProcess

GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornInstance(ServiceProcess):
    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__({**env, "PORT": str(self.port)}, log_path)

    def start(self, *, wait_for: str = "/health", timeout: float = 20.0) -> GunicornInstance:
        process = self.spawn([str(GUNICORN), "-c", "omk/gunicorn.conf.py"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + wait_for, timeout=2).status_code < 500:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer {wait_for} within {timeout} s:\n{self.log()}")
