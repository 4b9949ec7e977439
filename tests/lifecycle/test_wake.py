"""A worker that scales to zero: started only by a wake-up, running until its queue is empty, then
gone; and nothing lost when it is SIGKILLed mid-way (the next drain finishes the work).

The worker service is a real gunicorn answering POST /internal/wake (as on Cloud Run); the web is
this test's Django client, whose request runs the real middleware that sends the wake-up."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.db import transaction
from procrastinate.contrib.django.models import ProcrastinateJob

from core.redis import redis_client
from hive.models import Conversation, Reply
from hive.services import turn_append
from lifecycle.models import Instance
from lifecycle.outbox.services import record_event
from lifecycle.wake import DEBOUNCE_KEY, PENDING_KEY, wake_worker
from tests.support.sinks import SINK_KEY
from tests.support.workers import manage, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WAKE_TOKEN = "wake-secret-for-the-tests"
# Heartbeats every second, lost 3 s after the last (the stalled-job window is 3 s too).
FAST_REGISTRY = {"INSTANCE_HEARTBEAT_INTERVAL": "1", "INSTANCE_HEARTBEAT_TTL": "3"}
WORKER_ENV = {
    "WAKE_SERVE": "1",
    "WAKE_TOKEN": WAKE_TOKEN,
    "WEB_CONCURRENCY": "1",
    "PROCRASTINATE_IMPORT_PATHS": "tests.support.tasks",
    "OUTBOX_SINK": "tests.support.sinks.RedisSetSink",
    "QUEEN_LOCAL_DELAY": "0.2",
    **FAST_REGISTRY,
}
# What the wake-up path promises (docs/deployment.md): the work of a request is done within the
# worker's cold start plus one drain, seconds; here a drain process's start (Django, registration,
# start-up recovery) and its rounds on the 2-core test machine while other test runs share it
# (load 10-20; 8 s for the whole test when it is quiet).
WAKE_BOUND_SECONDS = 45


@pytest.fixture
def worker_service(start_instance, settings, service_env):
    """The Cloud Run worker service (gunicorn answering /internal/wake, no job worker running),
    and this process configured as the web that wakes it."""
    with redis_client().pipeline() as pipe:
        pipe.delete(PENDING_KEY, DEBOUNCE_KEY, SINK_KEY).execute()
    service = start_instance(wait_for="/ready", **WORKER_ENV)
    settings.LIFECYCLE_WAKE_URL = f"{service.url}/internal/wake"
    settings.LIFECYCLE_WAKE_TOKEN = WAKE_TOKEN
    yield service
    with transaction.atomic():
        ProcrastinateJob.objects.filter(task_name__startswith="tests.").delete()


def drain_processes(run_dir: str) -> list[int]:
    """`manage.py worker --until-empty` processes of this test (by the OMK_RUN_DIR they run with)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--until-empty" in cmdline and f"OMK_RUN_DIR={run_dir}".encode() in environ:
            found.append(int(proc.name))
    return found


def exported(event_id) -> bool:
    return redis_client().sismember(SINK_KEY, str(event_id))


def test_wake__the_worker_runs_only_when_woken_and_until_its_queue_is_empty(
    worker_service, service_env, api_client, user
):
    from tests.support.tasks import slow_job

    client = redis_client()
    # Work left behind with nobody to wake for it: a job and an analytics event.
    with transaction.atomic():
        job_id = slow_job.defer(key="wake:job", seconds=0.1)
        event_id = record_event(kind="lifecycle_event", payload={"detail": "left behind"})
    conversation = Conversation.objects.create(owner=user)
    time.sleep(1.0)
    assert client.llen("wake:job:done") == 0
    assert not exported(event_id)
    assert not Instance.objects.filter(kind="worker").exists(), "no worker runs before a wake-up"

    # A user's turn through the web: the request creates the Queen's reply and wakes the worker,
    # without waiting for the drain.
    began = time.monotonic()
    response = api_client.post(
        f"/api/conversations/{conversation.id}/turns/",
        {"role": "user", "content": "Anyone awake?"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    reply = Reply.objects.get(conversation=conversation)
    # Answered before the drain it started has done anything (its process takes seconds to start).
    assert reply.status == "pending"

    wait_for(lambda: Reply.objects.filter(pk=reply.pk, status="done").exists(), timeout=WAKE_BOUND_SECONDS)
    wait_for(lambda: client.llen("wake:job:done") == 1, timeout=5, message="job done")
    wait_for(lambda: exported(event_id), timeout=5, message="event exported")
    assert time.monotonic() - began < WAKE_BOUND_SECONDS
    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"

    # The drain stopped by itself once the queue was empty (a clean stop, not a kill), and no
    # process of it is left: the instance holds no request, Cloud Run gives it no CPU.
    drains = wait_for(
        lambda: list(Instance.objects.filter(kind="worker", state="stopped")), timeout=15, message="drain stopped"
    )
    assert len(drains) >= 1
    wait_for(lambda: not drain_processes(service_env["OMK_RUN_DIR"]), timeout=5, message="drain process gone")
    # The wake-up path ran it: nothing else ever started a worker.
    assert not Instance.objects.filter(kind="worker").exclude(state="stopped").exists()


def test_wake__a_drain_sigkilled_midway_loses_nothing(worker_service, service_env, user):
    from tests.support.tasks import slow_first_time

    client = redis_client()
    conversation = Conversation.objects.create(owner=user)
    with transaction.atomic():
        job_id = slow_first_time.defer(key="wake:kill", seconds=60)
        event_id = record_event(kind="lifecycle_event", payload={"detail": "before the kill"})
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Still there?")

    assert wake_worker() == "sent"
    wait_for(lambda: client.llen("wake:kill:started") == 1, timeout=WAKE_BOUND_SECONDS, message="job started")
    victim = Instance.objects.get(kind="worker", state="ready")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert ProcrastinateJob.objects.get(id=job_id).status == "doing"

    # Every wake-up after the kill is lost; the scheduled drain (the Cloud Run job's command) runs
    # once the killed worker's job is stalled (3 s without its heartbeat).
    time.sleep(3.5)
    env = {**service_env, **WORKER_ENV}
    result = manage(env, "worker", "--until-empty", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - killed_at < 3.5 + WAKE_BOUND_SECONDS

    assert client.llen("wake:kill:started") == 2
    assert client.llen("wake:kill:done") == 1
    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"
    assert exported(event_id)
    assert Reply.objects.get(pk=turn.reply.pk).status == "done"
    assert Instance.objects.get(pk=victim.pk).state == "lost"
