"""A short seeded chaos run, as CI runs it: kills, a drained scale-in, a Redis and a PostgreSQL
restart under load, and not one acknowledged write lost, duplicated or executed twice."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DURATION = 30
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
    assert report["kills"] >= 1
    assert report["drains"] >= 1
    assert report["redis_restarts"] == 1
    assert report["postgres_restarts"] == 1
    assert (report_dir / "timeline.png").stat().st_size > 10_000
    print(f"chaos run: {elapsed:.0f} s wall, {report['acknowledged']} acknowledged")
