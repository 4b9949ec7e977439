"""Durable jobs (procrastinate): stalled-job retry and hand-back, through Django's connection.

These helpers use a job manager on procrastinate's Django connector (the request's or the
task thread's Django connection) rather than the app's current connector: inside `manage.py
worker` the app's connector belongs to the worker's event loop and must not be used from the
threads that run steps and sync tasks.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import manager, utils
from procrastinate.contrib.django.django_connector import DjangoConnector

from lifecycle.conf import lifecycle_settings

logger = logging.getLogger(__name__)


def job_manager() -> manager.JobManager:
    return manager.JobManager(DjangoConnector())


def jobs_retry_stalled(*, seconds_since_heartbeat: float | None = None) -> list[int]:
    """Put back to `todo` every running job whose worker stopped heartbeating; return their ids.

    A retried job runs again from the start on any worker: jobs must be idempotent.
    """
    seconds = lifecycle_settings.STALLED_JOB_SECONDS if seconds_since_heartbeat is None else seconds_since_heartbeat
    jobs = job_manager()
    stalled = async_to_sync(jobs.get_stalled_jobs)(seconds_since_heartbeat=seconds)
    return _retry(jobs, [job.id for job in stalled if job.id is not None], reason="stalled")


def jobs_hand_back(*, job_ids: list[int]) -> list[int]:
    """Give back jobs this process claimed and could not finish, so another worker runs them now."""
    return _retry(job_manager(), job_ids, reason="handed back")


def _retry(jobs: manager.JobManager, job_ids: list[int], *, reason: str) -> list[int]:
    retried = []
    for job_id in job_ids:
        try:
            jobs.retry_job_by_id(job_id=job_id, retry_at=utils.utcnow())
        except procrastinate_exceptions.ConnectorException as exc:
            # Another recovery pass retried it first, or it finished meanwhile.
            logger.info("Job %s not retried (%s): %s", job_id, reason, exc)
            continue
        retried.append(job_id)
    if retried:
        logger.warning("Jobs retried (%s): %s", reason, ", ".join(map(str, retried)))
    return retried
