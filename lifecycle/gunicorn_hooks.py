"""The gunicorn master's part of an instance's life (server hooks wired in omk/gunicorn.conf.py).

- Start: a fresh instance id (inherited by the workers), Django imported but no connection
  opened (workers inherit whatever the master holds at fork), Redis heartbeats from a thread
  with a client of its own, and registration and recovery in a forked startup process.
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
    # The process registering and recovering the instance (lifecycle.startup), while it runs.
    startup_pid: int | None = None


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
    master_setup(startup_process=True)
    server.handle_term = types.MethodType(handle_term, server)
    server.reap_workers = types.MethodType(reap_workers, server)
    # Ctrl-C (`make run`): gunicorn's handle_int is a quick stop, no drain and no report. The same
    # sequence as SIGTERM instead; the workers, which got the terminal's SIGINT too, ignore it
    # (post_worker_init) and stop when the sequence stops them.
    server.handle_int = types.MethodType(handle_term, server)


def master_setup(*, startup_process: bool = False) -> None:
    """Flags of an earlier master with this pid cleared, Django set up, the instance file written;
    with `startup_process`, the startup's registration and recovery forked off right after
    django.setup() (lifecycle.startup).

    Also run by the Cloud Run functions entry point (lifecycle/function_hooks.py), which has no
    server hooks and runs the startup itself."""
    import django

    from lifecycle.shutdown import instance_file, write_json

    clear_draining()
    recovered = os.environ[RECOVERED_FLAG_ENV]
    Path(recovered).unlink(missing_ok=True)
    Path(recovered).with_suffix(".lead").unlink(missing_ok=True)
    # Import Django (settings, apps, models) once in the master: the shutdown steps need it after
    # the workers are gone, and workers then fork with it loaded, with what the first request
    # and the startup recovery need (lifecycle.warmup). No connection is opened here.
    django.setup()
    if startup_process:
        from lifecycle.startup import start_web_startup_process

        state.startup_pid = start_web_startup_process(master_pid=os.getpid())
    from lifecycle.warmup import preload_request_path

    preload_request_path()
    write_json(
        instance_file("gunicorn", os.getpid()),
        {"pid": os.getpid(), "instance_id": state.instance_id, "kind": "web", "started_at": time.time()},
    )


def reap_workers(arbiter) -> None:
    """Replaces Arbiter.reap_workers: the startup process first, by its pid.

    gunicorn reaps its children with waitpid(-1) and ignores one that is not a worker; a startup
    process that ended before the instance was recovered (killed, say) is replaced here, as a
    worker would be, or the instance would never turn ready."""
    from gunicorn.arbiter import Arbiter

    startup_process_reap()
    Arbiter.reap_workers(arbiter)


def startup_process_reap() -> None:
    from prometheus_client import multiprocess

    from lifecycle.startup import release_startup_lead_of, start_web_startup_process

    pid = state.startup_pid
    if pid is None:
        return
    try:
        ended, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        ended, status = pid, -1
    if not ended:
        return
    state.startup_pid = None
    # Its live gauges go, as a worker's do (child_exit); its counters stay counted.
    multiprocess.mark_process_dead(pid)
    if is_recovered() or is_draining():
        return
    logger.error(
        "The startup process %d ended (status %d) before the instance was recovered: forking another", pid, status
    )
    release_startup_lead_of(pid)
    state.startup_pid = start_web_startup_process(master_pid=os.getpid())


def startup_process_stop() -> None:
    """A stopping instance does not go on registering and recovering (every step is idempotent:
    another instance's pass redoes what this one cut short)."""
    pid, state.startup_pid = state.startup_pid, None
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def when_ready(server) -> None:
    from core.redis import build_redis_client
    from lifecycle.conf import lifecycle_settings
    from lifecycle.warmup import collection_resume

    # The last hook before gunicorn forks its workers (collection paused at config import).
    collection_resume()
    # A startup process that ended before gunicorn handled SIGCHLD is found here.
    startup_process_reap()

    # A client of the master's own (REDIS_URL or Sentinel, as every client): never Django's pool,
    # which the workers must create afresh.
    state.heartbeat = Heartbeat(
        client=build_redis_client(),
        instance_id=state.instance_id,
        state=_current_state,
        interval=lifecycle_settings.HEARTBEAT_INTERVAL,
        ttl=lifecycle_settings.HEARTBEAT_TTL,
        lease=_idle_lease if lifecycle_settings.IDLE_HEARTBEAT_TTL else None,
    ).start()


def _idle_lease() -> tuple[float, int | None]:
    """Request-based CPU: a beat taken with no request in flight lasts the idle TTL, since the
    next one may come only with the next request; one taken while serving lasts the usual TTL."""
    from lifecycle.conf import lifecycle_settings

    in_flight, ended = inflight.snapshot()
    if in_flight > 0 or lifecycle_settings.IDLE_HEARTBEAT_TTL is None:
        return lifecycle_settings.HEARTBEAT_TTL, ended
    return lifecycle_settings.IDLE_HEARTBEAT_TTL, ended


def _current_state() -> str:
    if is_draining():
        return "draining"
    return "ready" if is_recovered() else "starting"


def post_fork(server, worker) -> None:
    from core.connections import connections_name

    connections_name(pid=os.getpid())


def post_worker_init(worker) -> None:
    from lifecycle.startup import start_web_startup_thread, worker_pools_open

    # gunicorn's worker quits at once on SIGINT; the master's shutdown sequence stops it instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    worker_pools_open()
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

    startup_process_stop()
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
        self.label = f"Waiting for load balancers ({seconds:.1f} s)"

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

    startup_process_stop()
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
