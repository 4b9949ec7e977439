"""Startup of real instances: readiness waits for recovery; /metrics in multiprocess mode."""

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from chaos.topology import pid_alive
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
    assert "http_requests_in_flight 0.0" in body  # before any request a worker counts
    assert "sessions_recovered_total" in body
    assert "sessions_active" in body
    assert "instance_shutdown_duration_seconds" in body


SLOW_RECOVERY = "lifecycle.recovery.MarkLostInstances,tests.support.steps.SlowRecoveryStep"


def _startup_process(instance) -> int:
    """The pid in the instance's startup lead file, once it is the master's forked process."""
    lead = Path(instance.env["OMK_RUN_DIR"]) / f"gunicorn-{instance.pid}.lead"
    deadline = time.monotonic() + 10
    while True:
        pid = int(lead.read_text() or 0) if lead.exists() else 0
        if pid and pid != instance.pid:
            return pid
        assert time.monotonic() < deadline, instance.log()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_startup_process__killed_mid_recovery__the_master_forks_another(start_instance):
    instance = start_instance(wait_for="/health", LIFECYCLE_RECOVERY_STEPS=SLOW_RECOVERY)
    first = _startup_process(instance)
    assert str(first) in Path(f"/proc/{instance.pid}/task/{instance.pid}/children").read_text().split()
    os.kill(first, signal.SIGKILL)

    deadline = time.monotonic() + 20
    while requests.get(instance.url + "/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, instance.log()
        time.sleep(0.1)
    assert f"The startup process {first} ended" in instance.log()
    registered = Instance.objects.get(pid=instance.pid)
    assert registered.state == "ready"
    assert LifecycleReport.objects.filter(instance=registered, kind="recovery").count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_startup_process__sigterm_while_recovering__stops_it_with_the_instance(start_instance):
    # A step that hangs: the recovery would run to its budget (10 s) after the master is gone.
    instance = start_instance(wait_for="/health", LIFECYCLE_RECOVERY_STEPS="tests.support.steps.HangingStep")
    startup = _startup_process(instance)
    instance.signal(signal.SIGTERM)
    assert instance.wait(timeout=15) == 0
    assert not pid_alive(startup)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_startup_process__master_sigkilled__it_gives_up_instead_of_retrying_forever(start_instance):
    # Redis refuses: registration fails and is retried every RETRY_SECONDS.
    instance = start_instance(wait_for="/health", REDIS_URL="redis://127.0.0.1:1/0")
    startup = _startup_process(instance)
    os.kill(instance.pid, signal.SIGKILL)  # the master only, not its process group
    deadline = time.monotonic() + 10
    while pid_alive(startup):
        assert time.monotonic() < deadline, instance.log()
        time.sleep(0.1)
    assert "Startup recovery abandoned" in instance.log()
