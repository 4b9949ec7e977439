"""`manage.py stop` without arguments: every instance on this host (what `make run` starts, the
web instance and the worker, and the BigQuery emulator it recorded), each with its report."""

import subprocess
from pathlib import Path

import pytest

from lifecycle.models import Instance
from tests.support.workers import manage, wait_for

SINK = {"OUTBOX_SINK": "tests.support.sinks.RedisSetSink"}
BUDGET = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "4"}


def _fake_bqemulator(run_dir: Path) -> subprocess.Popen:
    """A process named bqemulator, recorded where `make run` records the one it starts."""
    process = subprocess.Popen(["bash", "-c", "exec -a bqemulator sleep 60"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bqemulator.pid").write_text(f"{process.pid}\n")
    return process


def _ready(kind: str, pid: int) -> bool:
    return Instance.objects.filter(pid=pid, kind=kind, state="ready").exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stop_command__without_arguments_stops_web_worker_and_emulator(start_instance, start_worker, service_env):
    web = start_instance(wait_for="/ready", DRAIN_DELAY="0", **SINK, **BUDGET)
    worker = start_worker(**SINK, **BUDGET)
    wait_for(lambda: _ready("worker", worker.pid), timeout=20, message="worker ready")
    emulator = _fake_bqemulator(Path(service_env["OMK_RUN_DIR"]))

    result = manage({**service_env, **BUDGET}, "stop")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    headers = [line for line in out if line.startswith("Stopping ")]
    assert sorted(h.split(" instance ")[0] for h in headers[:2]) == ["Stopping web", "Stopping worker"]
    assert {f"(pid {web.pid})" in h for h in headers[:2]} == {True, False}
    assert headers[2] == f"Stopping the local BigQuery emulator (pid {emulator.pid})"
    # Each instance's report: its four headings, what was lost and a clean summary.
    assert out.count("Persisting active sessions:") == 2
    assert out.count("Lost: 0") == 2
    assert sum(line.endswith("of a 4 s budget; nothing left in memory.") for line in out) == 2
    assert web.process.wait(timeout=5) == 0
    assert worker.wait(timeout=5) == 0
    assert emulator.wait(timeout=5) != 0  # ended by our SIGTERM
    assert not (Path(service_env["OMK_RUN_DIR"]) / "bqemulator.pid").exists()
    assert set(Instance.objects.values_list("state", flat=True)) == {"stopped"}

    nothing = manage({**service_env, **BUDGET}, "stop")
    assert nothing.returncode == 2
    assert "No running instance" in nothing.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stop_command__pid_stops_only_that_one_and_a_failed_one_exits_1(start_instance, start_worker, service_env):
    web = start_instance(
        wait_for="/ready", DRAIN_DELAY="0", LIFECYCLE_SHUTDOWN_STEPS="tests.support.steps.HangingStep", **BUDGET
    )
    worker = start_worker(**SINK, **BUDGET)
    wait_for(lambda: _ready("worker", worker.pid), timeout=20, message="worker ready")
    emulator = _fake_bqemulator(Path(service_env["OMK_RUN_DIR"]))

    picked = manage({**service_env, **BUDGET}, "stop", "--pid", str(worker.pid))

    assert picked.returncode == 0, picked.stdout + picked.stderr
    assert picked.stdout.startswith("Stopping worker instance worker-")
    assert "web instance" not in picked.stdout
    assert worker.wait(timeout=5) == 0
    assert web.process.poll() is None  # not picked: still serving
    assert emulator.poll() is None  # --pid stops that instance only

    # The web instance's hung step: its stop is not clean, and the whole command exits 1 even
    # though the emulator stopped well.
    rest = manage({**service_env, **BUDGET}, "stop")
    assert rest.returncode == 1, rest.stdout + rest.stderr
    assert "NOT clean" in rest.stdout
    assert emulator.wait(timeout=5) != 0
