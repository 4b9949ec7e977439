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
