"""Durable jobs (procrastinate): stalled-job retry and hand-back, and the job worker.

The retry and hand-back helpers use a job manager on procrastinate's Django connector (the
request's or the task thread's Django connection) rather than the app's current connector:
inside `manage.py worker` the app's connector belongs to the worker's event loop and must not be
used from the threads that run steps and sync tasks.

`JobWorker` runs procrastinate's worker for `manage.py worker` through procrastinate's
documented API only (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from procrastinate import App, manager, utils
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.contrib.django.django_connector import DjangoConnector

from lifecycle.conf import lifecycle_settings

logger = logging.getLogger(__name__)


# Set once this process's worker is stopping. A long job (an LLM call) checks it, stops its work
# and hands itself back (a retry due now) instead of running past the shutdown budget.
_stopping = threading.Event()


def jobs_stopping() -> threading.Event:
    return _stopping


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


# Seconds a query for the worker's running jobs may take: the shutdown's budget is short, and
# without an answer the jobs are retried anyway once the worker stops heartbeating.
RUNNING_JOBS_QUERY_TIMEOUT = 1.0


class JobWorker:
    """procrastinate's worker, run, stopped and asked for its running jobs through what
    procrastinate documents (an upgrade announces changes to it), none of its private names:

    - `App.run_worker_async(**options)` runs it, with the app's worker defaults under `options`
      as procrastinate merges them (the Django contrib's connection cleanup among them);
    - cancelling that task once is procrastinate's graceful stop: no job is fetched any more,
      the running ones go on and the task ends when they have (a second cancel would abort them);
    - its running jobs are read from PostgreSQL, not from the worker's memory: the jobs in
      `doing` with its worker id (`JobManager.list_jobs_async`). That id is the one procrastinate
      writes on each job it claims (`Job.worker_id`), which a worker middleware reads as the job
      starts: procrastinate has no other public way to it. Before a first job started there is
      no job of this worker to find.
    """

    def __init__(self, app: App, **options: Any):
        self.app = app
        self.worker_id: int | None = None
        # The task of each job this worker started, in order (the drain counts them).
        self.task_names: list[str] = []
        # The worker middleware procrastinate would use (the call's, else the app's worker
        # defaults', App's `worker_defaults` argument), then ours.
        middleware = options.get("worker_middleware") or app.worker_defaults.get("worker_middleware") or []
        middleware = [*middleware, self._note_worker_id]
        self.options = {**options, "worker_middleware": middleware}
        self.task: asyncio.Task[None] | None = None

    async def _note_worker_id(self, call_next, context, worker) -> Any:
        self.worker_id = context.job.worker_id
        self.task_names.append(context.job.task_name)
        return await call_next()

    def start(self) -> asyncio.Task[None]:
        """Run the worker in a task of the running event loop (the app must be open)."""
        self.task = asyncio.create_task(self.app.run_worker_async(**self.options), name="procrastinate worker")
        return self.task

    def stop(self) -> None:
        """Fetch no more jobs; the running ones go on. Call it in the worker's event loop."""
        if self.task is not None and not self.task.done() and not self.task.cancelling():
            self.task.cancel()

    @property
    def stopped(self) -> bool:
        """True once the worker's task ended: no job of it runs any more."""
        return self.task is not None and self.task.done()

    async def wait(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for the worker to end; True if it has."""
        assert self.task is not None
        await asyncio.wait({self.task}, timeout=max(0.0, timeout))
        return self.task.done()

    async def running_job_ids(self, *, timeout: float = RUNNING_JOBS_QUERY_TIMEOUT) -> list[int]:
        """The jobs this worker claimed and did not finish, as PostgreSQL has them."""
        if self.worker_id is None:
            return []
        jobs = await asyncio.wait_for(
            self.app.job_manager.list_jobs_async(status="doing", worker_id=self.worker_id), timeout
        )
        return [job.id for job in jobs if job.id is not None]
