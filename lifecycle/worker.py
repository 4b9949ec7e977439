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


def worker_run(*, queues: Iterable[str] | None = None, concurrency: int = 1) -> int:
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
    # more after this loop has stopped.
    export_stop = threading.Event()
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
            worker = JobWorker(app, **options)
            run_task = worker.start()
            stopper = asyncio.create_task(stop_requested.wait())
            await asyncio.wait({run_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if run_task.done() and not received:
                run_task.result()  # the worker crashed: raise its error
                return 0

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
        self.on_drain()
        self.loop.call_soon_threadsafe(self.worker.stop)
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
