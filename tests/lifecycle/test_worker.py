"""Job workers (`manage.py worker`): a SIGKILLed worker's job completes on another one, and the
dead instance is found lost; a SIGTERMed worker hands its running job back."""

import re
import signal
import time

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from core.redis import redis_client
from lifecycle.models import Instance, LifecycleReport
from tests.support.tasks import slow_job
from tests.support.workers import manage, wait_for

# Fast registry for the test: heartbeat every second, lost after 3 s without one.
FAST_REGISTRY = {"INSTANCE_HEARTBEAT_INTERVAL": "1", "INSTANCE_HEARTBEAT_TTL": "3"}


# A report line of `manage.py stop`: label, dots, status, seconds and an optional note.
STEP_LINE = re.compile(
    r"^(?P<label>.+?) \.{3,} (?P<status>ok|failed|timed out|skipped) +[\d.]+ s(?:  \((?P<detail>.*)\))?$"
)


def _instance_id(worker) -> str:
    return Instance.objects.get(pid=worker.pid, kind="worker").id


def _ready(worker) -> bool:
    return Instance.objects.filter(pid=worker.pid, kind="worker", state="ready").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_sigkill__job_completes_elsewhere_and_instance_is_lost(start_worker):
    workers = [start_worker(**FAST_REGISTRY), start_worker(**FAST_REGISTRY)]
    for worker in workers:
        wait_for(lambda w=worker: _ready(w), timeout=20, message=f"worker {worker.pid} ready")
    client = redis_client()

    job_id = slow_job.defer(key="job", seconds=2)
    started_by = int(wait_for(lambda: client.lindex("job:started", 0), timeout=10, message="job started"))
    victim = next(w for w in workers if w.pid == started_by)
    survivor = next(w for w in workers if w.pid != started_by)
    victim.kill()
    killed_at = time.monotonic()

    wait_for(lambda: client.lrange("job:done", 0, -1), timeout=15, message="job done elsewhere")
    assert time.monotonic() - killed_at < 15
    assert [int(pid) for pid in client.lrange("job:done", 0, -1)] == [survivor.pid]
    # Run twice from the start (jobs are idempotent), never more.
    assert [int(pid) for pid in client.lrange("job:started", 0, -1)] == [victim.pid, survivor.pid]
    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"

    lost = wait_for(
        lambda: Instance.objects.filter(pid=victim.pid, state="lost").first(), timeout=15, message="victim lost"
    )
    assert time.monotonic() - killed_at < 15
    assert lost.events.last().state == "lost"
    assert Instance.objects.get(pid=survivor.pid).state == "ready"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_sigterm__running_job_is_handed_back_within_budget(start_worker):
    budget = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "4"}
    worker = start_worker(**budget)
    wait_for(lambda: _ready(worker), timeout=20, message="worker ready")
    client = redis_client()
    job_id = slow_job.defer(key="long", seconds=30)
    wait_for(lambda: client.lindex("long:started", 0), timeout=10, message="job started")

    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    worker.wait(timeout=10)
    assert time.monotonic() - sent < 4.0

    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"  # back in the queue, not lost
    report = LifecycleReport.objects.get(kind="shutdown", instance__pid=worker.pid)
    steps = {s["name"]: s for s in report.steps}
    # The periodic recovery pass may have been running too.
    assert steps["finish_jobs"]["count"] >= 1
    assert "handed back" in steps["finish_jobs"]["detail"]
    assert steps["hand_back_jobs"]["count"] >= 1
    assert steps["hand_back_jobs"]["status"] == "ok"
    assert Instance.objects.get(pid=worker.pid).state == "stopped"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stop_command__follows_a_worker_and_prints_its_report(start_worker, service_env):
    budget = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "4"}
    worker = start_worker(OUTBOX_SINK="tests.support.sinks.RedisSetSink", **budget)
    wait_for(lambda: _ready(worker), timeout=20, message="worker ready")
    client = redis_client()
    job_id = slow_job.defer(key="long", seconds=30)
    wait_for(lambda: client.lindex("long:started", 0), timeout=10, message="job started")

    result = manage({**service_env, **budget}, "stop")

    assert result.returncode == 0, result.stdout + result.stderr
    header, *lines, lost, summary = result.stdout.splitlines()
    assert header.startswith(f"Stopping worker instance {_instance_id(worker)} (pid {worker.pid})")
    assert lost == "Lost: 0"
    # Step lines are indented under their group's heading.
    steps = [STEP_LINE.match(line.strip()).groupdict() for line in lines if line.startswith("  ")]
    names = [step["label"].split(" (")[0] for step in steps]
    assert names[:2] == ["Draining", "Finishing running jobs"]
    assert "Handing back claimed jobs" in names
    assert {step["status"] for step in steps} == {"ok"}
    # The periodic recovery pass may have been running too.
    assert steps[1]["detail"].endswith("still running at the deadline: handed back")
    assert summary.endswith("of a 4 s budget; nothing left in memory.")
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker__exports_the_outbox_continuously(start_worker):
    from lifecycle.outbox.models import OutboxEvent
    from lifecycle.outbox.services import record_event
    from tests.support.sinks import SINK_KEY

    # A short linger: the loop holds a small batch that long (10 s by default) before sending it.
    worker = start_worker(OUTBOX_SINK="tests.support.sinks.RedisSetSink", OUTBOX_BATCH_LINGER_SECONDS="0.5")
    wait_for(lambda: _ready(worker), timeout=20, message="worker ready")
    event_ids = {str(record_event(kind="bee_decision", payload={"bee": "b1", "n": n})) for n in range(5)}

    exported = wait_for(
        lambda: event_ids <= {m.decode() for m in redis_client().smembers(SINK_KEY)} or None,
        timeout=15,
        message="events exported by the running worker",
    )
    assert exported
    # The rows are marked exported after the sink has them, in a commit of their own.
    marked = wait_for(
        lambda: not OutboxEvent.objects.filter(pk__in=event_ids, exported_at__isnull=True).exists() or None,
        timeout=10,
        message="the exported events marked exported",
    )
    assert marked
    assert worker.process.poll() is None  # exported while running, not by a shutdown


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker__serves_its_own_metrics_on_its_port(start_worker):
    import requests

    from tests.support.instances import free_port

    port = free_port()
    worker = start_worker(WORKER_METRICS_PORT=str(port), OUTBOX_SINK="tests.support.sinks.RedisSetSink")
    wait_for(lambda: _ready(worker), timeout=20, message="worker ready")

    def scraped() -> str | None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except requests.RequestException:
            return None
        # The samples the recovery and outbox alerts read exist only in the worker process.
        wanted = ('instance_startup_total{kind="worker"} 1.0', "instance_recovery_success_total", "outbox_pending")
        return text if all(name in text for name in wanted) else None

    assert wait_for(scraped, timeout=15, message="the worker's metrics with its recovery and outbox samples")


def _restart_database(*, down: float) -> int:
    """Close every connection to the test database and refuse new ones for `down` seconds, as a
    PostgreSQL restart does; return how many were closed. Done from the `postgres` database: a
    database cannot refuse connections to itself."""
    import psycopg
    from django.db import connection

    connection.close()
    params = connection.settings_dict
    name = params["NAME"]
    admin = psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        password=params["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        quoted = psycopg.sql.Identifier(name)
        admin.execute(psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(quoted))
        try:
            closed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchone()[0]
            time.sleep(down)
        finally:
            admin.execute(psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(quoted))
    return closed


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker__runs_jobs_again_after_a_database_restart(start_worker):
    budget = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "4"}
    # A sink that answers (no BigQuery emulator here): the stop exports the restart's events, and
    # an unreachable BigQuery would be a step cut off at the deadline, not the restart's doing.
    worker = start_worker(OUTBOX_SINK="tests.support.sinks.RedisSetSink", **FAST_REGISTRY, **budget)
    wait_for(lambda: _ready(worker), timeout=20, message="worker ready")
    client = redis_client()
    slow_job.defer(key="before", seconds=0)
    wait_for(lambda: client.lrange("before:done", 0, -1), timeout=10, message="job done before the cut")
    assert _restart_database(down=3) >= 1

    slow_job.defer(key="after", seconds=0)

    wait_for(lambda: client.lrange("after:done", 0, -1), timeout=20, message="job deferred after the cut done")
    assert worker.process.poll() is None  # the same process, its procrastinate worker restarted
    assert "procrastinate worker stopped by itself" in worker.log()
    assert _ready(worker)
    assert worker.stop(timeout=10) == 0  # and a restarted worker still stops gracefully
