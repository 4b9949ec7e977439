"""Durable jobs: enqueued in the caller's transaction; stalled jobs are retried by recovery."""

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from procrastinate.contrib.django.models import ProcrastinateJob

from lifecycle.jobs import job_manager, jobs_hand_back, jobs_retry_stalled
from tests.support.tasks import slow_job


@pytest.mark.django_db(transaction=True)
def test_defer__joins_the_transaction():
    def change_that_fails() -> None:
        with transaction.atomic():
            slow_job.defer(key="rolled-back", seconds=0)
            raise RuntimeError("the change that needed the job failed")

    with pytest.raises(RuntimeError):
        change_that_fails()
    # Filtered by key: job workers of earlier tests may have left periodic jobs behind.
    assert not ProcrastinateJob.objects.filter(task_name="tests.slow_job", args__key="rolled-back").exists()

    with transaction.atomic():
        slow_job.defer(key="committed", seconds=0)
    assert ProcrastinateJob.objects.filter(task_name="tests.slow_job", args__key="committed").count() == 1


def _running_job(heartbeat_age_seconds: float) -> int:
    """A job in `doing`, claimed by a worker whose last heartbeat is that old."""
    job_id = slow_job.defer(key="k", seconds=0)
    manager = job_manager()
    worker_id = async_to_sync(manager.register_worker)()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = NOW() - make_interval(secs => %s) WHERE id = %s",
            [heartbeat_age_seconds, worker_id],
        )
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s", [worker_id, job_id]
        )
    return job_id


@pytest.mark.django_db(transaction=True)
def test_jobs_retry_stalled__only_jobs_of_silent_workers():
    stalled = _running_job(heartbeat_age_seconds=10)
    healthy = _running_job(heartbeat_age_seconds=0)

    # (Jobs left `doing` by workers killed in earlier tests may be retried too.)
    retried = jobs_retry_stalled(seconds_since_heartbeat=3)
    assert stalled in retried
    assert healthy not in retried

    jobs = {j.id: j for j in ProcrastinateJob.objects.all()}
    assert jobs[stalled].status == "todo"
    assert jobs[stalled].attempts == 1
    assert jobs[healthy].status == "doing"
    # Retried once: a second pass (another instance at the same time) finds nothing to do.
    assert stalled not in jobs_retry_stalled(seconds_since_heartbeat=3)


@pytest.mark.django_db(transaction=True)
def test_jobs_hand_back__running_job_goes_back_to_todo():
    job_id = _running_job(heartbeat_age_seconds=0)
    assert jobs_hand_back(job_ids=[job_id]) == [job_id]
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


@pytest.mark.django_db(transaction=True)
def test_idempotency_purge_pass__deletes_only_keys_past_retention(settings, django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    from lifecycle.idempotency.models import IdempotencyRecord
    from lifecycle.idempotency.tasks import idempotency_purge_pass

    settings.IDEMPOTENCY_RETENTION_SECONDS = 3600
    user = django_user_model.objects.create_user("purger")
    old = IdempotencyRecord.objects.create(user=user, key="old", request_hash="x", method="POST", path="/api/x")
    fresh = IdempotencyRecord.objects.create(user=user, key="fresh", request_hash="x", method="POST", path="/api/x")
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))

    assert idempotency_purge_pass(0) == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == [fresh.key]


@pytest.mark.django_db(transaction=True)
def test_job_worker__running_jobs_come_from_the_database_and_the_stop_lets_them_finish():
    """What `manage.py worker` relies on procrastinate for, through its documented API only: the
    jobs a worker claimed carry its id, which its middleware sees and the job manager filters on;
    cancelling run_worker_async's task once stops fetching and lets the running job finish."""
    import asyncio
    import os

    from procrastinate.contrib.django import app

    from core.redis import redis_client
    from lifecycle.jobs import JobWorker

    queue = "job-worker-test"  # this worker runs only the test's job (not the periodic ones)

    async def wait_until(predicate, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def main() -> tuple[int, int | None]:
        with app.replace_connector(app.connector.get_worker_connector()):
            async with app.open_async():
                worker = JobWorker(
                    app, queues=[queue], concurrency=1, install_signal_handlers=False, fetch_job_polling_interval=0.1
                )
                worker.start()
                assert await worker.running_job_ids() == []  # no job started: no id, nothing to find
                job_id = await slow_job.configure(queue=queue).defer_async(key="jw", seconds=3)
                await wait_until(lambda: worker.worker_id is not None)
                worker_id = worker.worker_id
                assert await worker.running_job_ids() == [job_id]

                worker.stop()
                assert not await worker.wait(0.3)  # the running job goes on
                assert not worker.stopped
                assert await worker.running_job_ids() == [job_id]
                assert await worker.wait(10)
                assert worker.stopped
                assert await worker.running_job_ids() == []
                return job_id, worker_id

    job_id, worker_id = asyncio.run(main())
    assert worker_id is not None
    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"
    assert [int(pid) for pid in redis_client().lrange("jw:done", 0, -1)] == [os.getpid()]
