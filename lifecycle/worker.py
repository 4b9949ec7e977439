"""`manage.py worker`: procrastinate's worker with the same lifecycle as a web instance.

Register (state starting), heartbeat, run recovery, go ready, run jobs (the periodic recovery
task among them) and export the outbox continuously. On SIGTERM or SIGINT: state draining, stop
fetching and exporting, wait for running jobs within the budget, hand back the ones still
running, run the configured shutdown steps, store the report, exit. A second signal exits at
once and leaves the running jobs to recovery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable

from asgiref.sync import sync_to_async

from lifecycle.conf import lifecycle_settings
from lifecycle.jobs import JobWorker
from lifecycle.registry import INSTANCE_ID_ENV, Heartbeat, new_instance_id
from lifecycle.shutdown import ShutdownSequence
from lifecycle.steps import Step, StepContext
from lifecycle.worker_probes import WorkerProbes, worker_probes_serve

logger = logging.getLogger("lifecycle.worker")


def worker_run(*, queues: Iterable[str] | None = None, concurrency: int = 1, until_empty: bool = False) -> int:
    """Run the worker until a stop signal; with `until_empty`, until nothing is left to do (the
    drain of a worker that scales to zero), then stop as after a SIGTERM and return."""
    from django.conf import settings
    from procrastinate.contrib.django import app

    from core.redis import redis_client
    from lifecycle.metrics import INSTANCE_STARTUP
    from lifecycle.models import InstanceState
    from lifecycle.recovery import recovery_run
    from lifecycle.services import instance_register, instance_set_state
    from lifecycle.shutdown import instance_file, write_json

    instance_id = os.environ.get(INSTANCE_ID_ENV) or new_instance_id("worker")
    os.environ[INSTANCE_ID_ENV] = instance_id
    pid = os.getpid()
    write_json(instance_file("worker", pid), {"pid": pid, "instance_id": instance_id, "kind": "worker"})
    instance_register(instance_id=instance_id, kind="worker")
    INSTANCE_STARTUP.labels(kind="worker").inc()
    current = {"state": "starting"}
    heartbeat = Heartbeat(
        client=redis_client(),
        instance_id=instance_id,
        state=lambda: current["state"],
        interval=lifecycle_settings.HEARTBEAT_INTERVAL,
        ttl=lifecycle_settings.HEARTBEAT_TTL,
    ).start()
    probes = _serve_probes(lifecycle_settings.WORKER_METRICS_PORT, heartbeat=heartbeat, current=current)
    recovery_run(instance_id=instance_id, kind="worker")
    current["state"] = "ready"
    instance_set_state(instance_id=instance_id, state=InstanceState.READY, detail="recovery done")
    logger.info("Worker %s ready", instance_id)

    # The outbox is exported continuously here, beside the jobs; the shutdown step exports once
    # more after this loop has stopped. A drain exports in its own rounds instead.
    export_stop = threading.Event()
    if not until_empty:
        threading.Thread(target=_export_outbox, args=(export_stop,), name="outbox exporter", daemon=True).start()

    options = dict(getattr(settings, "PROCRASTINATE_WORKER_DEFAULTS", None) or {})
    options.update(concurrency=concurrency, install_signal_handlers=False, name=instance_id)
    if queues:
        options["queues"] = list(queues)
    try:
        return asyncio.run(
            _serve(
                app,
                options,
                instance_id=instance_id,
                heartbeat=heartbeat,
                current=current,
                on_drain=export_stop.set,
                probes=probes,
                until_empty=until_empty,
            )
        )
    finally:
        export_stop.set()
        instance_file("worker", pid).unlink(missing_ok=True)


def _serve_probes(port: int | None, *, heartbeat: Heartbeat, current: dict) -> WorkerProbes | None:
    """/health, /ready and /metrics on `port` (or nothing without one)."""
    if not port:
        return None
    probes = WorkerProbes(
        heartbeat=heartbeat,
        state=lambda: current["state"],
        hung_seconds=lifecycle_settings.WORKER_HUNG_SECONDS,
        ttl=lifecycle_settings.HEARTBEAT_TTL,
    )
    worker_probes_serve(int(port), probes)
    return probes


def _export_outbox(stop: threading.Event) -> None:
    from lifecycle.outbox.exporter import outbox_export_loop

    outbox_export_loop(stop=stop)


async def _serve(
    app,
    options: dict,
    *,
    instance_id: str,
    heartbeat: Heartbeat,
    current: dict,
    on_drain: Callable[[], None],
    probes: WorkerProbes | None = None,
    until_empty: bool = False,
) -> int:
    loop = asyncio.get_running_loop()
    if probes is not None:
        probes.watch_loop(loop)
    stop_requested = asyncio.Event()
    received: list[float] = []

    def on_signal() -> None:
        if received:
            # Second signal: leave now; recovery elsewhere retries the running jobs.
            logger.warning("Second stop signal: exiting at once")
            os._exit(1)
        received.append(time.time())
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)

    with app.replace_connector(app.connector.get_worker_connector()):
        async with app.open_async():
            if until_empty:
                worker = await _run_until_empty(app, options, stop_requested)
                if not received:
                    received.append(time.time())
            else:
                worker = await _run_until_stop_requested(app, options, stop_requested)

            def drain() -> None:
                current["state"] = "draining"
                on_drain()

            sequence = ShutdownSequence(
                process="worker", instance_id=instance_id, kind="worker", heartbeat=heartbeat, began=received[0]
            )
            sequence.context.job_worker_id = worker.worker_id
            first = [
                StopFetchingJobs(sequence.context, worker=worker, loop=loop, on_drain=drain),
                FinishJobs(sequence.context, worker=worker, loop=loop),
            ]
            # In a thread: the event loop goes on running the worker and its jobs meanwhile.
            report = await sync_to_async(sequence.run, thread_sensitive=False)(first)
            code = 0 if report.ok else 1
            if not worker.stopped:
                # Abandoned sync jobs' threads would keep asyncio.run (and the process) alive.
                logging.shutdown()
                os._exit(code)
            return code


# Seconds before procrastinate's worker is started again after it stopped by itself, doubled
# after each stop in a row up to the maximum: PostgreSQL may still be restarting.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 8.0
# A worker that ran this long before stopping by itself starts the backoff over.
RESTART_STABLE_SECONDS = 30.0


async def _run_until_stop_requested(app, options: dict, stop_requested: asyncio.Event) -> JobWorker:
    """Run procrastinate's worker until a stop is requested; return the one running then.

    procrastinate's worker stops by itself when one of its side tasks fails: its LISTEN
    connection cannot reconnect while PostgreSQL restarts ("Side task listener failed ...,
    stopping worker"). Its run then ends (normally, or with the error of its own cleanup), and
    this process, registered and heartbeating as ready, would run no job any more. So it is
    started again, after a backoff, in the same process: the registry, heartbeat and outbox
    exporter go on, and a stop requested meanwhile still runs the shutdown sequence.
    """
    from lifecycle.metrics import JOB_WORKER_RESTARTS

    stopper = asyncio.create_task(stop_requested.wait(), name="stop requested")
    backoff = RESTART_BACKOFF
    while True:
        worker = JobWorker(app, **options)
        run_task = worker.start()
        started = time.monotonic()
        await asyncio.wait({run_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop_requested.is_set():
            return worker
        error = run_task.exception()
        if time.monotonic() - started >= RESTART_STABLE_SECONDS:
            backoff = RESTART_BACKOFF
        logger.error(
            "procrastinate worker stopped by itself (%s): restarting it in %.1f s",
            repr(error) if error else "no error",
            backoff,
            exc_info=error,
        )
        JOB_WORKER_RESTARTS.inc()
        await asyncio.wait({stopper}, timeout=backoff)
        if stop_requested.is_set():
            return worker
        backoff = min(backoff * 2, RESTART_BACKOFF_MAX)


async def _run_until_empty(app, options: dict, stop_requested: asyncio.Event) -> JobWorker:
    """Rounds until one finds nothing to do, a stop is requested or DRAIN_MAX_SECONDS is spent.

    A round: take the pending mark (lifecycle.wake), run the recovery pass and the apps' periodic
    tasks once (due purchases expired, stalled jobs back to todo, ...), run every job that is due
    (procrastinate's worker with `wait=False` stops at the first empty fetch), then export the
    outbox (what the jobs recorded too). A round that ran a job other than a periodic one, or
    exported an event, or found the mark set, is followed by another. Jobs due later (a retry's
    backoff) are left to the next wake-up or the scheduled drain.
    """
    from core.redis import redis_client
    from lifecycle.metrics import DRAIN_ROUNDS
    from lifecycle.wake import wake_pending_after_release, wake_pending_take

    client = redis_client()
    periodic = _periodic_tasks(app)
    deadline = time.monotonic() + lifecycle_settings.DRAIN_MAX_SECONDS
    stopper = asyncio.create_task(stop_requested.wait(), name="stop requested")
    while True:
        DRAIN_ROUNDS.inc()
        announced = await sync_to_async(wake_pending_take, thread_sensitive=False)(client)
        await sync_to_async(_maintenance_pass, thread_sensitive=False)(periodic)
        worker = JobWorker(app, **{**options, "wait": False, "listen_notify": False})
        run_task = worker.start()
        await asyncio.wait({run_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop_requested.is_set():
            return worker
        exported = await sync_to_async(_export_round, thread_sensitive=False)()
        ran = [name for name in worker.task_names if name not in {task.name for task in periodic}]
        logger.info("Drain round: %d jobs, %d events exported, announced %s", len(ran), exported, announced)
        if time.monotonic() >= deadline:
            logger.warning(
                "Drain stopped after %.0f s with work left (the next one takes it)",
                lifecycle_settings.DRAIN_MAX_SECONDS,
            )
            return worker
        if ran or exported or announced:
            continue
        if not await sync_to_async(wake_pending_after_release, thread_sensitive=False)(client):
            return worker


def _periodic_tasks(app) -> list:
    """The apps' periodic tasks (procrastinate's registry, as `manage.py worker` schedules them)."""
    return [periodic.task for periodic in app.periodic_registry.periodic_tasks.values()]


def _maintenance_pass(tasks: list) -> None:
    """Each periodic task once, now, in this thread: a drain lives seconds, and procrastinate's
    own deferrer (a side task of the job worker) may not get round to them before it stops."""
    from django.db import close_old_connections

    for task in tasks:
        try:
            task(timestamp=int(time.time()))
        except Exception:
            # Each is retried by the next drain; one failing must not keep the others from running.
            logger.exception("Periodic task %s failed in the drain", task.name)
    close_old_connections()


def _export_round() -> int:
    from django.db import close_old_connections

    from lifecycle.outbox.exporter import outbox_export

    try:
        return outbox_export(max_seconds=30.0)
    except Exception:
        # PostgreSQL or the sink out of reach: the rows wait in PostgreSQL for the next drain.
        logger.exception("Outbox export failed in the drain")
        return 0
    finally:
        close_old_connections()


class StopFetchingJobs(Step):
    """The heartbeat says draining, the outbox loop stops, and the worker takes no new job."""

    name = "drain"
    label = "Draining (no new jobs)"
    in_thread = False

    def __init__(
        self,
        context: StepContext,
        *,
        worker: JobWorker,
        loop: asyncio.AbstractEventLoop,
        on_drain: Callable[[], None],
    ):
        super().__init__(context)
        self.worker = worker
        self.loop = loop
        self.on_drain = on_drain

    def run(self, *, deadline: float) -> int:
        from lifecycle.jobs import jobs_stopping

        self.on_drain()
        self.loop.call_soon_threadsafe(self.worker.stop)
        # Cancellable jobs stop now and hand themselves back; the others are waited for.
        jobs_stopping().set()
        return 0


async def _running_job_ids(worker: JobWorker) -> list[int]:
    try:
        return await worker.running_job_ids()
    except Exception as exc:
        # PostgreSQL is out of reach: nothing can be handed back now. The jobs are retried by
        # recovery once this worker stops heartbeating.
        logger.warning("Could not list the running jobs: %r", exc)
        return []


class FinishJobs(Step):
    """Wait, until the step's deadline, for the jobs the worker is running. Those still running
    then are left in the context for HandBackJobs, which gives them to another worker."""

    name = "finish_jobs"
    label = "Finishing running jobs ({count})"
    in_thread = False

    def __init__(self, context: StepContext, *, worker: JobWorker, loop: asyncio.AbstractEventLoop):
        super().__init__(context)
        self.worker = worker
        self.loop = loop

    def run(self, *, deadline: float) -> int:
        running, still = asyncio.run_coroutine_threadsafe(self._finish(deadline), self.loop).result()
        self.context.job_worker_id = self.worker.worker_id
        self.context.running_job_ids = still
        if still:
            # Not a failure: nothing is lost, the next step hands them to another worker.
            self.detail = f"{len(still)} still running at the deadline: handed back"
        return len(running)

    async def _finish(self, deadline: float) -> tuple[list[int], list[int]]:
        running = await _running_job_ids(self.worker)
        finished = await self.worker.wait(deadline - time.monotonic())
        still = [] if finished else await _running_job_ids(self.worker)
        return running, still
