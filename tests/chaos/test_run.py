"""A short seeded chaos run, as CI runs it: kills, a drained scale-in, a Redis and a PostgreSQL
restart, a PostgreSQL failover and a Redis failover (the primary SIGKILLed, its replica promoted
by the Sentinels), partitions (packets dropped inside an instance's network namespace) and added
latency under load, and not one acknowledged write lost, duplicated or executed twice."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# 35 s: the scale-in falls in a window clear of the failover and the PostgreSQL restart. Too short
# to keep two failovers, two restarts and three network faults of 6 to 8 s each apart
# (chaos.scaler.FaultGate): here they overlap on purpose, which the invariants must survive; the
# 10-minute run keeps them apart for its per-fault figures.
DURATION = 35
SEED = 11


@pytest.mark.slow
def test_chaos_run__short_seeded_run_has_no_violation(tmp_path: Path):
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        pytest.fail("haproxy is not installed: run scripts/install-system-packages.sh (make test does)")
    report_dir = tmp_path / "chaos"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "--duration",
            str(DURATION),
            "--seed",
            str(SEED),
            "--report-dir",
            str(report_dir),
            "--overlap-faults",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert (report_dir / "report.json").exists(), output
    report = json.loads((report_dir / "report.json").read_text())
    assert result.returncode == 0, f"violations: {report['violations']}\n{output}"
    assert report["violations"] == []
    for count in ("lost", "duplicated", "double_executions", "failed_during_planned_scale_in"):
        assert report[count] == 0, count
    # The run did what it claims: real load and every kind of fault happened.
    assert report["acknowledged"] > 50
    assert report["acknowledged_operations"] > report["acknowledged"]  # the checked reads too
    assert report["kills"] >= 1
    assert report["drains"] >= 1
    assert report["redis_restarts"] == 1
    assert report["postgres_restarts"] == 1
    assert report["postgres_failovers"] == 1
    # The service wrote to the promoted standby (a PostgreSQL write acknowledged after the stop).
    assert report["postgres_failover"][0]["writes_ok_after_s"] is not None
    assert report["redis_failovers"] == 1
    assert report["redis_min_replicas_ack"] == 1
    # Writes went through the promoted primary again (how soon is a figure of the report).
    (failover,) = report["faults"]["redis_failover"]["recovery_s"]
    assert failover["writes_ok_after_s"] is not None, failover
    # Network faults: partitions whose victims left the load balancer (the verdict also fails a
    # victim still running and not back after the heal; one may be drained or killed meanwhile),
    # and no request longer than the bound (HAProxy's timeout server).
    network = report["network_faults"]
    partitions = [w for kind, fault in network.items() if kind.startswith("partition_") for w in fault["windows"]]
    assert partitions, network
    assert all(w["left_lb_s"] is not None for w in partitions), partitions
    assert network["latency"]["faults"] == 1
    assert network["longest_request_s"] <= network["request_bound_s"]
    assert (report_dir / "timeline.png").stat().st_size > 10_000
    print(f"chaos run: {elapsed:.0f} s wall, {report['acknowledged']} acknowledged")
