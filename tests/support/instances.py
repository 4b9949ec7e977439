"""Real gunicorn instances of the service, started as a platform would start them."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from chaos.ports import free_port
from tests.support.processes import ServiceProcess

GUNICORN = Path(sys.executable).with_name("gunicorn")
FUNCTIONS_FRAMEWORK = Path(sys.executable).with_name("functions-framework")


class GunicornInstance(ServiceProcess):
    argv = [str(GUNICORN), "-c", "omk/gunicorn.conf.py"]

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__({**env, "PORT": str(self.port)}, log_path)

    def start(self, *, wait_for: str = "/health", timeout: float = 20.0) -> GunicornInstance:
        process = self.spawn(self.argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{Path(self.argv[0]).name} exited with {process.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + wait_for, timeout=2).status_code < 500:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{Path(self.argv[0]).name} did not answer {wait_for} within {timeout} s:\n{self.log()}")


class FunctionInstance(GunicornInstance):
    """The service as Cloud Run functions runs it: `functions-framework` on the entry point, with
    the environment a function's runtime sets (K_SERVICE and FUNCTION_TARGET)."""

    argv = [str(FUNCTIONS_FRAMEWORK), "--source", "omk/function.py", "--target", "serve"]

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None):
        super().__init__({"K_SERVICE": "omk-function", "FUNCTION_TARGET": "serve", **env}, log_path, port)


class NamespacedInstance(GunicornInstance):
    """A gunicorn instance inside a network namespace of chaos/netns.py: its PostgreSQL and Redis
    addresses (127.0.0.1:<port> in `env`) become the namespace's proxy routes, and it is reached on
    the namespace's address, so a DROP rule in the namespace cuts exactly its paths."""

    def __init__(self, namespace, env: Mapping[str, str], log_path: Path, port: int | None = None):
        super().__init__({name: namespace.rewrite(value) for name, value in env.items()}, log_path, port)
        self.namespace = namespace
        self.url = f"http://{namespace.address}:{self.port}"

    def spawn(self, argv):
        return super().spawn(self.namespace.wrap(list(argv)))
