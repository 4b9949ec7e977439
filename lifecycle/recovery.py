"""Startup (and periodic) recovery: take over the work of instances that vanished.

Run before an instance reports ready, every few seconds by the job workers, and by hand with
`manage.py recover`. Every step is idempotent and safe to run on several instances at once.
"""

from __future__ import annotations

import logging
import time

from lifecycle.conf import lifecycle_settings
from lifecycle.metrics import (
    INSTANCE_SHUTDOWN,
    INSTANCE_SHUTDOWN_DURATION,
    PENDING_FLUSHED,
    PENDING_LOST,
    RECOVERY_FAILURE,
    RECOVERY_SUCCESS,
)
from lifecycle.steps import Report, Step, StepContext, load_steps, run_steps

logger = logging.getLogger(__name__)


class MarkLostInstances(Step):
    name = "mark_lost_instances"
    label = "Marking lost instances ({count})"

    def run(self, *, deadline: float) -> int:
        from lifecycle.services import instances_mark_lost

        return len(instances_mark_lost())


class RetryStalledJobs(Step):
    name = "retry_stalled_jobs"
    label = "Retrying stalled jobs ({count})"

    def run(self, *, deadline: float) -> int:
        from lifecycle.jobs import jobs_retry_stalled

        return len(jobs_retry_stalled())


class CountShutdowns(Step):
    """Count the shutdowns other instances stored into this process's metrics.

    A stopping instance cannot count its own shutdown usefully: its /metrics goes away with it,
    before anything scrapes the figures. Its stored report is counted here, once, by whichever
    live instance's pass claims it first.
    """

    name = "count_shutdowns"
    label = "Counting finished shutdowns ({count})"
    bookkeeping = True

    def run(self, *, deadline: float) -> int:
        from lifecycle.services import shutdown_reports_claim

        claimed = shutdown_reports_claim()
        for kind, report in claimed:
            INSTANCE_SHUTDOWN.labels(kind=kind, outcome="clean" if report.ok else "unclean").inc()
            INSTANCE_SHUTDOWN_DURATION.observe(report.duration)
            for step in report.steps:
                if step.get("flushes") and step.get("count"):
                    PENDING_FLUSHED.labels(kind=step["flushes"]).inc(step["count"])
                if step.get("lost"):
                    # Reports stored before steps named what they lose came from FinishRequests.
                    PENDING_LOST.labels(kind=step.get("loses") or "request").inc(step["lost"])
        return len(claimed)


def recovery_run(
    *,
    instance_id: str | None,
    kind: str = "web",
    record: bool | None = True,
    budget: float = 10.0,
) -> Report:
    """Run the recovery steps within `budget` seconds; store the report.

    `record=None` stores it only when the pass found something or failed (the periodic pass
    would otherwise write a row every few seconds).
    """
    report = Report(kind="recovery", started_at=time.time(), budget=budget)
    started = time.monotonic()
    steps = load_steps(lifecycle_settings.RECOVERY_STEPS, StepContext(instance_id=instance_id, kind=kind))
    run_steps(steps, report=report, deadline=started + budget)
    report.duration = time.monotonic() - started
    (RECOVERY_SUCCESS if report.ok else RECOVERY_FAILURE).inc()
    bookkeeping = {step.name for step in steps if step.bookkeeping}
    found = sum(s.count for s in report.steps if s.name not in bookkeeping)
    if instance_id and (record or (record is None and (found or not report.ok))):
        from lifecycle.services import report_record

        report_record(instance_id=instance_id, report=report)
    log = logger.info if report.ok else logger.error
    log(
        "Recovery pass: %s",
        ", ".join(f"{s.name} {s.status} {s.count} in {s.duration:.3f}s" for s in report.steps),
        extra={"report": report.as_dict()},
    )
    return report


__all__ = [
    "CountShutdowns",
    "MarkLostInstances",
    "RetryStalledJobs",
    "Step",
    "recovery_run",
]
