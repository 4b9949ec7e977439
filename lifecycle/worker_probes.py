"""The job worker's probes, served with its metrics on LIFECYCLE_WORKER_METRICS_PORT.

A worker takes no HTTP traffic, so its probes tell the kubelet what it could not see otherwise:

- `/health` (liveness) tells a hung worker from a busy one. A busy worker runs its jobs while its
  event loop keeps turning and its heartbeat thread keeps beating; a hung one stops one or both.
  So: 503 when the event loop has not turned for LIFECYCLE_WORKER_HUNG_SECONDS, or the heartbeat
  thread has not begun a write for that long. A Redis outage is not a hang (the attempt counts,
  not its success): restarting every worker would not bring Redis back. While the worker stops,
  its heartbeat is stopped on purpose and only the event loop counts.
- `/ready` (readiness): 200 once start-up recovery is done and while the worker is not draining
  and its last heartbeat reached Redis within the heartbeat TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifecycle.registry import Heartbeat

logger = logging.getLogger(__name__)

PROBE_PATHS = ("/health", "/ready")
METRICS_PATH = "/metrics"


class WorkerProbes:
    def __init__(self, *, heartbeat: Heartbeat, state: Callable[[], str], hung_seconds: float, ttl: float):
        self.heartbeat = heartbeat
        self.state = state
        self.hung_seconds = hung_seconds
        self.ttl = ttl
        # None until the job loop starts (after start-up recovery; the startup probe covers that).
        self.loop_turned: float | None = None

    def watch_loop(self, loop: asyncio.AbstractEventLoop, every: float = 1.0) -> None:
        """Note the time each `every` seconds from inside `loop`: it stops when the loop hangs."""

        def turn() -> None:
            self.loop_turned = time.monotonic()
            loop.call_later(every, turn)

        loop.call_soon(turn)

    def health(self) -> tuple[int, dict]:
        now = time.monotonic()
        checks: dict[str, float] = {}
        # The shutdown sequence stops the heartbeat on purpose; the grace period bounds the rest.
        if not self.heartbeat.stopped:
            checks["heartbeat_age"] = round(now - self.heartbeat.last_attempt, 3)
        if self.loop_turned is not None:
            checks["event_loop_age"] = round(now - self.loop_turned, 3)
        hung = [name for name, age in checks.items() if age > self.hung_seconds]
        return (503 if hung else 200), {"status": "hung" if hung else "ok", "checks": checks, "hung": hung}

    def ready(self) -> tuple[int, dict]:
        state = self.state()
        written = self.heartbeat.last_written
        age = None if written is None else round(time.monotonic() - written, 3)
        ok = state == "ready" and age is not None and age <= self.ttl
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "state": state, "heartbeat_age": age}


def worker_probes_serve(port: int, probes: WorkerProbes) -> ThreadingHTTPServer:
    """Serve /health, /ready and /metrics from daemon threads: they die with the process."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from lifecycle.metrics import metrics_registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == METRICS_PATH:
                self._send(200, generate_latest(metrics_registry()), CONTENT_TYPE_LATEST)
            elif self.path in PROBE_PATHS:
                status, body = probes.health() if self.path == "/health" else probes.ready()
                self._send(status, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass  # a probe every few seconds is not worth a log line

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker probes", daemon=True).start()
    logger.info("Worker probes and metrics on port %s", port)
    return server
