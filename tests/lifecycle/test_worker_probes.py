"""The worker's probes: /health tells a hung worker (event loop or heartbeat thread stopped) from
a busy one; /ready follows start-up, draining and the heartbeat reaching Redis."""

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from core.redis import redis_client
from lifecycle.registry import Heartbeat
from lifecycle.worker_probes import WorkerProbes, worker_probes_serve
from tests.support.instances import free_port
from tests.support.tasks import blocking_async_job, slow_job
from tests.support.workers import wait_for


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


class Unreachable:
    """A Redis client whose every write fails, as in an outage."""

    def set(self, *args, **kwargs):
        from redis.exceptions import ConnectionError

        raise ConnectionError("Redis is down")


def test_worker_probes__redis_outage_is_unready_not_hung():
    down: Any = Unreachable()
    heartbeat = Heartbeat(client=down, instance_id="w", state=lambda: "ready", interval=0.05, ttl=1).start()
    probes = WorkerProbes(heartbeat=heartbeat, state=lambda: "ready", hung_seconds=0.5, ttl=1)
    try:
        time.sleep(0.6)
        assert probes.health()[0] == 200  # the thread beats; Redis not answering is not a hang
        assert probes.ready() == (503, {"status": "unavailable", "state": "ready", "heartbeat_age": None})
    finally:
        heartbeat.stop(clear=False)
    time.sleep(0.6)
    assert probes.health()[0] == 200  # stopped on purpose (shutdown): not counted


def test_worker_probes__stuck_heartbeat_thread_is_hung():
    heartbeat = Heartbeat(client=redis_client(), instance_id="w", state=lambda: "ready", interval=60, ttl=120)
    heartbeat.start()
    probes = WorkerProbes(heartbeat=heartbeat, state=lambda: "ready", hung_seconds=0.3, ttl=120)
    server = worker_probes_serve(port := free_port(), probes)
    try:
        assert get(port, "/ready")[0] == 200
        assert get(port, "/health")[0] == 200
        time.sleep(0.4)  # no beat within hung_seconds: the thread is as good as stuck
        status, body = get(port, "/health")
        assert (status, body["hung"]) == (503, ["heartbeat_age"])
    finally:
        server.shutdown()
        heartbeat.stop()


HUNG = 6


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_health__ok_while_busy_503_when_the_event_loop_blocks(start_worker):
    port = free_port()
    worker = start_worker(
        WORKER_METRICS_PORT=str(port),
        WORKER_HUNG_SECONDS=str(HUNG),
        INSTANCE_HEARTBEAT_INTERVAL="0.5",
        INSTANCE_HEARTBEAT_TTL="2",
        # One beat while Redis is down then takes at most 4 x 1.1 s and the backoff (lifecycle.E007);
        # still over the locks' and queues' blocking reads.
        REDIS_SOCKET_TIMEOUT="1.1",
    )

    def ready() -> bool:
        assert worker.process.poll() is None, worker.log_path.read_text()
        return get(port, "/ready")[0] == 200

    wait_for(ready, timeout=30, message="worker ready")
    client = redis_client()

    # Busy: a long sync job runs in its thread while the loop and the heartbeat go on.
    slow_job.defer(key="busy", seconds=HUNG + 2)
    wait_for(lambda: client.lindex("busy:started", 0), timeout=10, message="slow job started")
    time.sleep(HUNG + 0.5)
    status, body = get(port, "/health")
    assert status == 200, body
    assert body["checks"]["event_loop_age"] < HUNG
    wait_for(lambda: client.lindex("busy:done", 0), timeout=10, message="slow job done")

    # Hung: a job blocks the event loop itself.
    hang_id = blocking_async_job.defer(key="hang", seconds=HUNG + 3)
    wait_for(lambda: client.lindex("hang:started", 0), timeout=10, message="blocking job started")
    status, body = wait_for(
        lambda: (result := get(port, "/health"))[0] == 503 and result, timeout=HUNG + 5, message="/health 503"
    )
    assert body["hung"] == ["event_loop_age"]
    assert body["checks"]["event_loop_age"] > HUNG
    # /metrics is served beside the probes, whatever the loop does.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"instance_startup_total" in response.read()
    # Let it end: a job left running would be retried by the next test's worker.
    wait_for(
        lambda: ProcrastinateJob.objects.get(id=hang_id).status == "succeeded", timeout=10, message="blocking job done"
    )
    wait_for(lambda: get(port, "/health")[0] == 200, timeout=5, message="/health back to 200")
