"""Procrastinate tasks of the lifecycle app (autodiscovered: PROCRASTINATE_AUTODISCOVER_MODULE_NAME)."""

from __future__ import annotations

import logging

from django.db import close_old_connections
from procrastinate.contrib.django import app

logger = logging.getLogger(__name__)

RECOVERY_LOCK = "lifecycle-recovery"


# Every 5 s (croniter's sixth field is seconds) some worker runs a recovery pass, so a SIGKILLed
# instance's work resumes within seconds even if no new instance starts. The queueing lock keeps
# at most one pass waiting, however many workers defer it. No `lock`: a pass running on a worker
# that is killed would hold it until... a recovery pass retried it. Passes may overlap safely.
@app.periodic(cron="* * * * * */5", periodic_id="lifecycle-recovery")
@app.task(name="lifecycle.recovery_pass", queueing_lock=RECOVERY_LOCK, pass_context=False)
def recovery_pass(timestamp: int) -> int:
    from lifecycle.recovery import recovery_run

    try:
        report = recovery_run(instance_id=None, record=False)
        return sum(step.count for step in report.steps)
    finally:
        # Sync tasks run in worker threads, outside any request: give the connection back.
        close_old_connections()


# The registry's history is kept for a month (LIFECYCLE_INSTANCE_RETENTION_SECONDS); once a day
# is enough to keep the table at a month of starts.
@app.periodic(cron="41 3 * * *", periodic_id="lifecycle-instances-prune")
@app.task(name="lifecycle.instances_prune", queueing_lock="lifecycle-instances-prune", pass_context=False)
def instances_prune_pass(timestamp: int) -> int:
    from datetime import timedelta

    from lifecycle.conf import lifecycle_settings
    from lifecycle.services import instances_prune

    try:
        return instances_prune(older_than=timedelta(seconds=lifecycle_settings.INSTANCE_RETENTION_SECONDS))
    finally:
        close_old_connections()
