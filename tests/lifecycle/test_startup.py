"""Startup of real instances: readiness waits for recovery; /metrics in multiprocess mode."""

import time

import pytest
import requests

from lifecycle.models import Instance, LifecycleReport


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ready__503_until_startup_recovery_completed(start_instance):
    steps = "lifecycle.recovery.MarkLostInstances,tests.support.steps.SlowRecoveryStep"
    instance = start_instance(wait_for="/health", LIFECYCLE_RECOVERY_STEPS=steps)

    first = requests.get(instance.url + "/ready", timeout=5)
    assert first.status_code == 503
    assert first.json()["checks"]["recovery"].startswith("Unavailable")
    assert first.json()["checks"]["database"] == "ok"

    deadline = time.monotonic() + 15
    while requests.get(instance.url + "/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, instance.log()
        time.sleep(0.1)
    registered = Instance.objects.get(pid=instance.pid)
    assert registered.kind == "web"
    assert registered.state == "ready"
    report = LifecycleReport.objects.get(instance=registered, kind="recovery")
    assert [s["name"] for s in report.steps] == ["mark_lost_instances", "slow_recovery"]
    assert report.steps[1]["count"] == 1
    assert report.steps[1]["duration"] >= 3.9


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_metrics__aggregated_over_workers(start_instance):
    instance = start_instance(wait_for="/ready")
    for _ in range(4):
        requests.get(instance.url + "/ready", timeout=5)
    body = requests.get(instance.url + "/metrics", timeout=5).text
    assert 'instance_startup_total{kind="web"} 1.0' in body
    assert "instance_recovery_success_total 1.0" in body
    # Labelled counters appear once counted; the others are there from the start.
    assert "instance_shutdown_duration_seconds_count 0.0" in body
    assert "sessions_recovered_total" in body
    assert "sessions_active" in body
    assert "instance_shutdown_duration_seconds" in body
