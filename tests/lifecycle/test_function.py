"""The Cloud Run functions entry point run for real: `functions-framework --target serve` on
omk/function.py, with the environment of a function's runtime (K_SERVICE, FUNCTION_TARGET)."""

import concurrent.futures
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from lifecycle.models import Instance, InstanceEvent, LifecycleReport
from tests.support.instances import FunctionInstance

SINK = {"OUTBOX_SINK": "tests.support.sinks.RedisSetSink"}


@pytest.fixture
def start_function(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., FunctionInstance]]:
    started: list[FunctionInstance] = []

    def start(wait_for: str = "/health", **env: str) -> FunctionInstance:
        instance = FunctionInstance(
            {**service_env, "THREADS": "8", **env}, log_path=tmp_path / f"function-{len(started)}.log"
        )
        started.append(instance)
        return instance.start(wait_for=wait_for, timeout=30)

    yield start
    for instance in started:
        instance.kill()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_function__serves_django_recovered_before_the_first_request_and_drains_on_sigterm(start_function):
    instance = start_function(**SINK)
    # The first answer already comes from a recovered instance: recovery ran before the port opened.
    ready = requests.get(instance.url + "/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    row = Instance.objects.get(pid=instance.pid, kind="web")
    assert row.state == "ready"
    assert row.platform == "cloud_run_functions"
    # Every path and method reaches Django, the body and Django's own status and headers included.
    bad = requests.post(instance.url + "/api/auth/login", json={"username": ""}, timeout=5)
    assert bad.status_code in (400, 422), bad.text
    assert bad.headers["Content-Type"].startswith("application/json")
    assert requests.get(instance.url + "/static/admin/css/base.css", timeout=5).status_code != 500
    assert requests.get(instance.url + "/no/such/page", timeout=5).status_code == 404

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=5)
    slow = [pool.submit(requests.get, instance.url + "/_test/slow?seconds=3", timeout=20) for _ in range(5)]
    time.sleep(0.7)  # all five are being served

    sent = time.monotonic()
    instance.signal(signal.SIGTERM)
    assert instance.process.wait(timeout=15) == 0, instance.log()
    took = time.monotonic() - sent
    assert [f.result().status_code for f in slow] == [200] * 5
    # Cloud Run's budget is 10 s, our deadline 9 s.
    assert took < 9.0, f"exited after {took:.1f} s, past the 9 s deadline"

    report = LifecycleReport.objects.get(kind="shutdown")
    assert report.ok, [(s["name"], s["status"], s.get("detail")) for s in report.steps]
    assert report.instance_id == row.id
    assert report.budget == 10
    steps = {s["name"]: s for s in report.steps}
    # No drain delay on Cloud Run: it stops routing before it sends SIGTERM.
    assert list(steps)[:2] == ["drain", "finish_requests"]
    assert steps["finish_requests"]["count"] == 5
    assert steps["finish_requests"]["status"] == "ok"
    assert steps["export_outbox"]["status"] == "ok"
    assert {"hand_back_messages", "close_connections"} <= set(steps)
    row.refresh_from_db()
    assert row.state == "stopped"
    states = list(InstanceEvent.objects.filter(instance=row).values_list("state", flat=True))
    assert states == ["starting", "ready", "draining", "stopped"]
