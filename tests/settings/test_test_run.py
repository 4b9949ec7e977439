"""`make pytest` (and so `make test`) runs settings.test on the test database and Redis db,
whatever settings, database and Redis the caller's shell exports."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOSTILE_ENV = {
    "DJANGO_SETTINGS_MODULE": "settings.local",
    "DATABASE_URL": "postgres://nobody@127.0.0.1:1/x",
    "REDIS_URL": "redis://127.0.0.1:1/0",
}

# Run by the nested pytest: reports what the run is configured with, and reaches both servers.
PROBE = """
import json
import os

import psycopg
import redis
from django.conf import settings


def test_probe():
    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres") as conn:
        conn.execute("SELECT 1")
    location = settings.CACHES["default"]["LOCATION"]
    assert redis.Redis.from_url(location, socket_timeout=5).ping()
    report = {
        "environ": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "settings": settings.SETTINGS_MODULE,
        "db_host": db["HOST"],
        "db_port": str(db["PORT"]),
        "test_db": db["TEST"]["NAME"],
        "redis": location,
        "xdist_worker": os.environ.get("PYTEST_XDIST_WORKER"),
    }
    # A file, not stdout: pytest-xdist's workers do not pass a test's output on.
    with open(os.environ["PROBE_REPORT"], "w") as out:
        json.dump(report, out)
"""


def make(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    # Not the outer make's jobserver and level, nor the outer pytest-xdist worker's name (which
    # picks its Redis db): the nested make is a caller's own.
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL") and not k.startswith("PYTEST_XDIST")
    }
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_make_pytest__ignores_callers_settings_database_and_redis(tmp_path):
    if not (ROOT / ".venv" / ".installed-dev").exists():
        pytest.skip("needs the checkout's .venv (make install-dev)")
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    # The probe creates no database and flushes nothing: any name and db number will do, as long
    # as they are not the defaults, so the test shows they pass through.
    names = {"TEST_DATABASE_NAME": "test_omk_probe_unused", "REDIS_TEST_DB": "7"}
    report_path = tmp_path / "probe.json"
    result = make(
        "pytest",
        f"PYTEST_ARGS=-c pyproject.toml --rootdir . -q {probe}",
        env={**HOSTILE_ENV, **names, "PROBE_REPORT": str(report_path)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert report["environ"] == report["settings"] == "settings.test"
    assert report["test_db"] == "test_omk_probe_unused"
    assert (report["db_host"], report["db_port"]) == ("127.0.0.1", "5432")
    # Each pytest-xdist worker (gw0, gw1, ...) counts down from REDIS_TEST_DB.
    worker = report["xdist_worker"]
    assert worker is None or worker.startswith("gw"), worker
    assert report["redis"] == f"redis://127.0.0.1:6379/{7 - int(worker[2:]) if worker else 7}"


def pytest_command(target: str) -> list[str]:
    """The pytest command line `make TARGET` runs (make -n: printed, not run)."""
    result = make("-n", target, env={})
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "/pytest" in line]
    return shlex.split(line)


def test_make_test_fast__deselects_slow_tests_in_the_same_environment():
    fast = pytest_command("test-fast")
    assert fast[fast.index("-m") + 1] == "not slow"
    assert fast[: fast.index("-m")] == pytest_command("pytest")


def test_make_pytest__runs_every_test_without_callers_service_env():
    argv = pytest_command("pytest")
    assert "-m" not in argv
    unset = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-u"}
    assert argv[0] == "env"
    assert unset == set(HOSTILE_ENV)
