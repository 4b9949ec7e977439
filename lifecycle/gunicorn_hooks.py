"""The gunicorn master's part of an instance's life (server hooks wired in omk/gunicorn.conf.py).

- Start: a fresh instance id (inherited by the workers), Django imported but no connection
  opened (workers inherit whatever the master holds at fork), Redis heartbeats from a thread
  with a client of its own, and the first worker runs registration and recovery.
- SIGTERM (and SIGINT, Ctrl-C): gunicorn closes its listener at once (gunicorn issues #2529, #3397), so a connection
  that arrives while load balancers still route to us would be refused. The master's
  `handle_term` is replaced: readiness turns 503 in every worker, the listener stays open and
  the workers keep serving for the drain delay, then gunicorn's graceful stop runs under our
  deadline, then the configured steps; the report is stored and the master exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import types
from pathlib import Path

from lifecycle import inflight
from lifecycle.drain import (
    DRAIN_FLAG_ENV,
    RECOVERED_FLAG_ENV,
    clear_draining,
    drain_started_at,
    is_draining,
    is_recovered,
    mark_draining,
)
from lifecycle.platform import default_drain_delay
from lifecycle.registry import INSTANCE_ID_ENV, Heartbeat, new_instance_id
from lifecycle.steps import Step, StepContext, StepTimedOut

logger = logging.getLogger("lifecycle.gunicorn")


class _State:
    instance_id: str = ""
    shutdown_done: bool = False
    heartbeat: Heartbeat | None = None


state = _State()


def configure_master_environment(run_dir: Path) -> None:
    """At config import, in the master, before anything forks or imports prometheus_client."""
    pid = os.getpid()
    os.environ.setdefault(DRAIN_FLAG_ENV, str(run_dir / f"gunicorn-{pid}.draining"))
    os.environ.setdefault(RECOVERED_FLAG_ENV, str(run_dir / f"gunicorn-{pid}.recovered"))
    # Multiprocess metrics: one directory per master, emptied at start (stale files of dead
    # processes would otherwise be summed in).
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(run_dir / f"prometheus-{pid}")))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    state.instance_id = os.environ.get(INSTANCE_ID_ENV) or new_instance_id("web")
    os.environ[INSTANCE_ID_ENV] = state.instance_id
    inflight.create()


def on_starting(server) -> None:
    import django

    from lifecycle.shutdown import instance_file, write_json

    clear_draining()
    recovered = os.environ[RECOVERED_FLAG_ENV]
    Path(recovered).unlink(missing_ok=True)
    Path(recovered).with_suffix(".lead").unlink(missing_ok=True)
    # Import Django (settings, apps, models) once in the master: the shutdown steps need it after
    # the workers are gone, and workers then fork with it loaded. No connection is opened here.
    django.setup()
    server.handle_term = types.MethodType(handle_term, server)
    # Ctrl-C (`make run`): gunicorn's handle_int is a quick stop, no drain and no report. The same
    # sequence as SIGTERM instead; the workers, which got the terminal's SIGINT too, ignore it
    # (post_worker_init) and stop when the sequence stops them.
    server.handle_int = types.MethodType(handle_term, server)
    write_json(
        instance_file("gunicorn", os.getpid()),
        {"pid": os.getpid(), "instance_id": state.instance_id, "kind": "web", "started_at": time.time()},
    )


def when_ready(server) -> None:
    from core.redis import build_redis_client
    from lifecycle.conf import lifecycle_settings

    # A client of the master's own (REDIS_URL or Sentinel, as every client): never Django's pool,
    # which the workers must create afresh.
    state.heartbeat = Heartbeat(
        client=build_redis_client(),
        instance_id=state.instance_id,
        state=_current_state,
        interval=lifecycle_settings.HEARTBEAT_INTERVAL,
        ttl=lifecycle_settings.HEARTBEAT_TTL,
    ).start()


def _current_state() -> str:
    if is_draining():
        return "draining"
    return "ready" if is_recovered() else "starting"


def post_fork(server, worker) -> None:
    """Settings were read in the master: name this worker's database connections after it."""
    from django.conf import settings
    from django.db import connections

    name = f"omk-{os.getpid()}"
    for databases in (settings.DATABASES, connections.settings):
        for config in databases.values():
            if "application_name" in config.get("OPTIONS", {}):
                config["OPTIONS"]["application_name"] = name


def post_worker_init(worker) -> None:
    from lifecycle.startup import start_web_startup_thread

    # gunicorn's worker quits at once on SIGINT; the master's shutdown sequence stops it instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    start_web_startup_thread(master_pid=worker.ppid)


def worker_exit(server, worker) -> None:
    """In the worker, after its last request: close the pools, flush the logs and leave.

    The interpreter's own teardown of a worker with Django loaded takes 0.5-1 s (atexit handlers
    and module teardown) and every stop would wait for it; nothing in it matters once the
    connections are closed and the logs flushed.
    """
    from core.connections import connections_close

    try:
        connections_close(pools=True, redis=True)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    from lifecycle.startup import release_startup_lead_of

    multiprocess.mark_process_dead(worker.pid)
    release_startup_lead_of(worker.pid)


def on_exit(server) -> None:
    from lifecycle.shutdown import instance_file

    instance_file("gunicorn", os.getpid()).unlink(missing_ok=True)
    clear_draining()
    Path(os.environ[RECOVERED_FLAG_ENV]).unlink(missing_ok=True)
    Path(os.environ[RECOVERED_FLAG_ENV]).with_suffix(".lead").unlink(missing_ok=True)
    if state.shutdown_done:
        # Our sequence stored the report and closed everything: skip the interpreter's slow
        # teardown (see worker_exit). gunicorn would exit 0 here too.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class MarkDraining(Step):
    name = "drain"
    label = "Draining (readiness 503)"
    in_thread = False

    def run(self, *, deadline: float) -> int:
        mark_draining()
        return 0


class DrainDelay(Step):
    """Keep accepting and serving while load balancers notice the 503."""

    name = "drain_delay"
    label = "Waiting for load balancers"
    in_thread = False

    def __init__(self, context: StepContext, *, seconds: float):
        super().__init__(context)
        self.seconds = seconds
        self.label = f"Waiting for load balancers ({seconds:g} s)"

    def run(self, *, deadline: float) -> int:
        time.sleep(max(0.0, min(self.seconds, deadline - time.monotonic())))
        return 0


class FinishRequests(Step):
    """gunicorn's graceful stop, bounded by our deadline: the listener closes, workers finish
    their in-flight requests and exit; any still running at the deadline are killed."""

    name = "finish_requests"
    label = "Finishing in-flight requests ({count})"
    in_thread = False
    loses = "request"

    def __init__(self, context: StepContext, *, arbiter):
        super().__init__(context)
        self.arbiter = arbiter

    def run(self, *, deadline: float) -> int:
        from gunicorn import sock

        arbiter = self.arbiter
        in_flight = inflight.count()
        sock.close_sockets(arbiter.LISTENERS, True)
        arbiter.LISTENERS = []
        arbiter.kill_workers(signal.SIGTERM)
        while arbiter.WORKERS and time.monotonic() < deadline:
            arbiter.reap_workers()
            time.sleep(0.05)
        if arbiter.WORKERS:
            left = max(inflight.count(), 0)
            arbiter.kill_workers(signal.SIGKILL)
            time.sleep(0.05)
            arbiter.reap_workers()
            raise StepTimedOut(
                f"{left} requests still running at the deadline were cut off", count=in_flight, lost=left
            )
        return in_flight


def handle_term(arbiter) -> None:
    """Replaces Arbiter.handle_term: our shutdown sequence, then gunicorn's halt.

    Should the sequence itself break, gunicorn's own graceful stop still runs (StopIteration)."""
    try:
        _shutdown_sequence(arbiter)
    except Exception:
        logger.exception("The shutdown sequence failed; falling back to gunicorn's graceful stop")
    raise StopIteration


def _shutdown_sequence(arbiter) -> None:
    from lifecycle.conf import lifecycle_settings
    from lifecycle.shutdown import ShutdownSequence

    # A preStop `manage.py drain` began the drain (and the budget) earlier.
    sequence = ShutdownSequence(
        process="gunicorn",
        instance_id=state.instance_id,
        kind="web",
        heartbeat=state.heartbeat,
        began=drain_started_at(),
        drained=is_draining,
    )
    delay = lifecycle_settings.DRAIN_DELAY
    delay = default_drain_delay(sequence.platform) if delay is None else delay
    delay_left = max(0.0, delay - sequence.elapsed())
    deadline = sequence.platform.shutdown_deadline
    logger.info("SIGTERM: draining for %.1f s, then stopping within %.1f s", delay_left, deadline)
    context = sequence.context
    first: list[Step] = [MarkDraining(context)]
    if delay_left > 0:
        first.append(DrainDelay(context, seconds=delay_left))
    first.append(FinishRequests(context, arbiter=arbiter))
    sequence.run(first)
    state.shutdown_done = True
