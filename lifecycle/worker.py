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
from lifecycle.platform import detect_platform
from lifecycle.registry import INSTANCE_ID_ENV, Heartbeat, new_instance_id
from lifecycle.shutdown import ReportWriter, report_file
from lifecycle.steps import Report, StepContext, StepResult, StepStatus, load_steps, run_steps, time_after

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
    _serve_metrics(lifecycle_settings.WORKER_METRICS_PORT)
    current = {"state": "starting"}
    heartbeat = Heartbeat(
        client=redis_client(),
        instance_id=instance_id,
        state=lambda: current["state"],
        interval=lifecycle_settings.HEARTBEAT_INTERVAL,
        ttl=lifecycle_settings.HEARTBEAT_TTL,
    ).start()
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
            )
        )
    finally:
        export_stop.set()
        instance_file("worker", pid).unlink(missing_ok=True)


def _serve_metrics(port: int | None) -> None:
    """Serve /metrics from a daemon thread: it dies with the process, samples and all."""
    if not port:
        return
    from prometheus_client import start_http_server

    from lifecycle.metrics import metrics_registry

    start_http_server(int(port), registry=metrics_registry())
    logger.info("Worker metrics on port %s", port)


def _export_outbox(stop: threading.Event) -> None:
    from lifecycle.outbox.exporter import outbox_export_loop

    outbox_export_loop(stop=stop)


async def _running_job_ids(worker: JobWorker) -> list[int]:
    try:
        return await worker.running_job_ids()
    except Exception as exc:
        # PostgreSQL is out of reach: nothing can be handed back now. The jobs are retried by
        # recovery once this worker stops heartbeating.
        logger.warning("Could not list the running jobs: %r", exc)
        return []


async def _serve(
    app, options: dict, *, instance_id: str, heartbeat: Heartbeat, current: dict, on_drain: Callable[[], None]
) -> int:
    loop = asyncio.get_running_loop()
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
            began = received[0]
            began_mono = time.monotonic() - max(0.0, time.time() - began)
            info = detect_platform()
            deadline = began_mono + info.shutdown_deadline
            report = Report(kind="shutdown", started_at=began, budget=info.shutdown_budget)
            writer = ReportWriter(report, report_file("worker", os.getpid()), instance_id=instance_id, pid=os.getpid())
            context = StepContext(instance_id=instance_id, kind="worker", job_worker_id=worker.worker_id)
            configured = load_steps(lifecycle_settings.SHUTDOWN_STEPS, context)
            reserve = lifecycle_settings.REPORT_RESERVE
            after_jobs = time_after(len(configured), reserve, info.shutdown_deadline)

            current["state"] = "draining"
            on_drain()
            t = time.monotonic()
            worker.stop()
            report.steps.append(StepResult("drain", "Draining (no new jobs)", StepStatus.OK, 0, time.monotonic() - t))
            writer()

            t = time.monotonic()
            running = await _running_job_ids(worker)
            finished = await worker.wait(deadline - after_jobs - time.monotonic())
            still = [] if finished else await _running_job_ids(worker)
            label = f"Finishing running jobs ({len(running)})"
            if still:
                # Not a failure: nothing is lost, the next step hands them to another worker.
                report.steps.append(
                    StepResult(
                        "finish_jobs",
                        label,
                        StepStatus.OK,
                        len(running),
                        time.monotonic() - t,
                        f"{len(still)} still running at the deadline: handed back",
                    )
                )
            else:
                report.steps.append(StepResult("finish_jobs", label, StepStatus.OK, len(running), time.monotonic() - t))
            context.running_job_ids = still
            writer()

            def finish() -> None:
                from lifecycle.shutdown import shutdown_finish

                def on_result(result) -> None:
                    report.duration = time.monotonic() - began_mono
                    writer()

                run_steps(configured, report=report, deadline=deadline, reserve=reserve, on_result=on_result)
                heartbeat.stop(clear=True)
                report.duration = time.monotonic() - began_mono
                shutdown_finish(instance_id=instance_id, report=report, drain_started_at=began)
                report.duration = time.monotonic() - began_mono
                writer(done=True)

            await sync_to_async(finish, thread_sensitive=False)()
            code = 0 if report.ok else 1
            if not worker.stopped:
                # Abandoned sync jobs' threads would keep asyncio.run (and the process) alive.
                logging.shutdown()
                os._exit(code)
            return code
