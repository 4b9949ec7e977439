"""Graceful shutdown: the configurable steps and the sequence that keeps them in the budget.

The web instance (gunicorn master, lifecycle/gunicorn_hooks.py) and the job worker
(lifecycle/worker.py) each run one `ShutdownSequence`: their own first steps (drain, finish
requests or jobs), then the configured LIFECYCLE_SHUTDOWN_STEPS, then `shutdown_finish` stores
and logs the report.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.conf import core_settings
from lifecycle.conf import lifecycle_settings
from lifecycle.platform import detect_platform
from lifecycle.steps import (
    Report,
    Step,
    StepContext,
    StepResult,
    StepStatus,
    load_steps,
    run_step,
    run_steps,
    time_after,
)

if TYPE_CHECKING:
    from lifecycle.registry import Heartbeat

logger = logging.getLogger(__name__)


class HandBackJobs(Step):
    """Jobs this process claimed and did not finish go back to `todo` for another worker."""

    name = "hand_back_jobs"
    label = "Handing back claimed jobs ({count})"
    flushes = "job"

    def run(self, *, deadline: float) -> int:
        if not self.context.running_job_ids:
            return 0
        from lifecycle.jobs import jobs_hand_back

        return len(jobs_hand_back(job_ids=self.context.running_job_ids))


class FlushLogs(Step):
    """Flush every log handler, so that no line of this process's end is lost with its buffers.

    Analytics events need no flush: each is an outbox row in PostgreSQL, written in the
    transaction of its change (export_outbox sends what it can; the rest waits there)."""

    name = "flush_logs"
    label = "Flushing log handlers ({count})"
    group = "logs"
    detail = "analytics events are outbox rows in PostgreSQL"

    def run(self, *, deadline: float) -> int:
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
        for handler in handlers:
            handler.flush()
        return len(handlers)


class CloseConnections(Step):
    """Close Redis and PostgreSQL connections (the pools close after the report is stored)."""

    name = "close_connections"
    label = "Closing connections"
    group = "connections"

    def run(self, *, deadline: float) -> int:
        from core.connections import connections_close

        return connections_close(pools=False, redis=True)


def run_dir() -> Path:
    return Path(core_settings.RUN_DIR)


def instance_file(kind: str, pid: int) -> Path:
    return run_dir() / f"{kind}-{pid}.json"


def report_file(kind: str, pid: int) -> Path:
    return run_dir() / f"{kind}-{pid}.report.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: `manage.py stop` reads these files while they change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class ReportWriter:
    """Keeps the report file up to date after every step, so `manage.py stop` can follow it."""

    def __init__(self, report: Report, path: Path, **extra: Any):
        self.report = report
        self.path = path
        self.extra = extra

    def __call__(self, result: StepResult | None = None, *, done: bool = False) -> None:
        try:
            write_json(self.path, {**self.report.as_dict(), **self.extra, "done": done})
        except OSError as exc:
            logger.warning("Could not write the shutdown report file: %r", exc)


class ShutdownSequence:
    """One process's shutdown, web or job worker, from its first step to the report's last write.

    The budget began with the drain: at `began` (a preStop `manage.py drain`, or the signal),
    else now. The deadline is that moment plus the platform's shutdown deadline. The process's
    own first steps (drain, finish its requests or jobs) must end `time_kept` seconds before it:
    that time is kept for the configured LIFECYCLE_SHUTDOWN_STEPS and the report's reserve. Then
    the heartbeat stops, `shutdown_finish` stores the report (cut off at the deadline: the report
    file says `stored`), and the report file is written a last time, `done`. The file is
    rewritten after every step for `manage.py stop` to follow.
    """

    def __init__(
        self,
        *,
        process: str,
        instance_id: str,
        kind: str,
        heartbeat: Heartbeat | None,
        began: float | None = None,
        drained: Callable[[], bool] = lambda: True,
    ):
        """`process` names the run directory's files ("gunicorn", "worker"); `kind` is the
        steps' (StepContext.kind). `drained` says, once the steps ran, whether this process
        drained: the drain is then recorded as having begun at `began` if nothing recorded it."""
        now_wall, now = time.time(), time.monotonic()
        self.began = began or now_wall
        self.began_mono = now - max(0.0, now_wall - self.began)
        self.platform = detect_platform()
        self.deadline = self.began_mono + self.platform.shutdown_deadline
        self.reserve = lifecycle_settings.REPORT_RESERVE
        self.instance_id = instance_id
        self.context = StepContext(instance_id=instance_id, kind=kind)
        self.configured = load_steps(lifecycle_settings.SHUTDOWN_STEPS, self.context)
        # Kept, after the requests or jobs, for the configured steps (hand-back, outbox, close).
        self.time_kept = time_after(len(self.configured), self.reserve, self.platform.shutdown_deadline)
        self.report = Report(kind="shutdown", started_at=self.began, budget=self.platform.shutdown_budget)
        pid = os.getpid()
        self.writer = ReportWriter(self.report, report_file(process, pid), instance_id=instance_id, pid=pid)
        self.heartbeat = heartbeat
        self.drained = drained

    def elapsed(self) -> float:
        """Seconds since the budget began."""
        return time.monotonic() - self.began_mono

    def run(self, first: Iterable[Step]) -> Report:
        """Run the process's `first` steps (built on `self.context`), then the configured ones."""
        for step in first:
            self.report.steps.append(run_step(step, deadline=self.deadline - self.time_kept))
            self._progress()
        run_steps(
            self.configured, report=self.report, deadline=self.deadline, reserve=self.reserve, on_result=self._progress
        )
        if self.heartbeat is not None:
            self.heartbeat.stop(clear=True)
        self.report.duration = self.elapsed()
        # Storing the report is a few PostgreSQL round trips: on a slow or broken path they must
        # not carry the process past its deadline (the platform's SIGKILL follows). Cut off, the
        # report is still in the log (written first) and in the report file.
        stored: list[bool] = []
        drain_started_at = self.began if self.drained() else None
        finish = threading.Thread(
            target=lambda: stored.append(
                shutdown_finish(instance_id=self.instance_id, report=self.report, drain_started_at=drain_started_at)
            ),
            name="shutdown-finish",
            daemon=True,
        )
        finish.start()
        finish.join(timeout=max(0.0, self.deadline - time.monotonic()))
        self.writer.extra["stored"] = stored == [True]
        if finish.is_alive():
            logger.error(
                "Shutdown report not stored by the deadline (%.1f s into the budget): it is in the log above",
                self.elapsed(),
            )
        self.report.duration = self.elapsed()
        self.writer(done=True)
        return self.report

    def _progress(self, result: StepResult | None = None) -> None:
        self.report.duration = self.elapsed()
        self.writer()


def shutdown_finish(*, instance_id: str, report: Report, drain_started_at: float | None) -> bool:
    """Store the report and the instance's last states in PostgreSQL, and log it. True: stored."""
    import datetime as dt

    from core.connections import connections_close
    from lifecycle.models import InstanceEvent, InstanceState
    from lifecycle.services import instance_set_state, report_record

    # No metric is counted here: this process is about to vanish with its samples, unscraped.
    # A live instance's recovery pass counts the stored report (lifecycle.recovery.CountShutdowns).
    outcome = "clean" if report.ok else "unclean"
    log = logger.info if report.ok else logger.error
    log(
        "Shutdown %s in %.2f s of a %s s budget: %s",
        outcome,
        report.duration,
        report.budget,
        "; ".join(f"{s.name} {s.status} {s.count} {s.duration:.2f}s" for s in report.steps),
        extra={"report": report.as_dict(), "instance_id": instance_id},
    )
    try:
        last = InstanceEvent.objects.filter(instance_id=instance_id).last()
        # `manage.py drain` (preStop) may have recorded the drain already.
        if drain_started_at is not None and (last is None or last.state != InstanceState.DRAINING):
            # The master could not write while it still forked workers: record the drain now,
            # at the time it began.
            InstanceEvent.objects.create(
                instance_id=instance_id,
                state=InstanceState.DRAINING,
                at=dt.datetime.fromtimestamp(drain_started_at, tz=dt.UTC),
                detail="readiness 503",
            )
        report_record(instance_id=instance_id, report=report)
        detail = (
            "clean stop"
            if report.ok
            else "stopped with failed steps: "
            + ", ".join(s.name for s in report.steps if s.status not in (StepStatus.OK, StepStatus.SKIPPED))
        )
        instance_set_state(instance_id=instance_id, state=InstanceState.STOPPED, detail=detail)
    except Exception as exc:
        # The report is in the log; PostgreSQL being down must not keep the process alive.
        logger.error("Could not store the shutdown report: %r", exc)
        return False
    else:
        return True
    finally:
        connections_close(pools=True, redis=False)
