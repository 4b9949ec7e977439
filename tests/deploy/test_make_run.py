"""The README's path, run for real: `make run`, then `python manage.py stop` from another terminal
prints both reports, exits 0 and leaves nothing of the run behind (the emulator included)."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from lifecycle.local_instances import local_instances, process_alive
from tests.support.instances import free_port
from tests.support.processes import ROOT
from tests.support.workers import manage, wait_for


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _session_members(sid: int) -> list[str]:
    """The processes left in a session (make's, and every child that did not leave it)."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                left.append(stat.parent.name)
    return left


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_make_run__manage_py_stop_prints_both_reports_exits_0_and_leaves_nothing(service_env, tmp_path):
    port, rest, grpc = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        # The README's own settings (settings.local) on this test run's database and Redis db.
        "DJANGO_SETTINGS_MODULE": "settings.local",
        "DATABASE_URL": service_env["DATABASE_URL"],
        "REDIS_URL": service_env["REDIS_URL"],
        "OMK_RUN_DIR": service_env["OMK_RUN_DIR"],
        "PORT": str(port),
        # The emulator on ports of its own (9050 and 9060 stay a developer's `make run`'s).
        "BQEMULATOR_REST_PORT": str(rest),
        "BQEMULATOR_GRPC_PORT": str(grpc),
        "BQEMULATOR_DATA_DIR": str(tmp_path / "bigquery"),
        "BIGQUERY_EMULATOR_URL": f"http://127.0.0.1:{rest}",
        "BIGQUERY_EMULATOR_GRPC": f"127.0.0.1:{grpc}",
        "DRAIN_DELAY": "0",
    }
    log = (tmp_path / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert make.poll() is None, (tmp_path / "make-run.log").read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("make run was not ready in 60 s:\n" + (tmp_path / "make-run.log").read_text())
        # `make run` starts the worker beside gunicorn: on a busy machine it may register after the
        # web instance is ready. A person who runs `manage.py stop` then finds both.
        run_dir = Path(service_env["OMK_RUN_DIR"])
        wait_for(
            lambda: {found.kind for found in local_instances(run_dir)} >= {"web", "worker"},
            timeout=30,
            message="the web instance and the worker both running",
        )
        emulator_pid = int((run_dir / "bqemulator.pid").read_text())

        result = manage(env, "stop")

        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout.splitlines()
        assert sorted(line.split(" instance ")[0] for line in out if " instance " in line and "Stopping" in line) == [
            "Stopping web",
            "Stopping worker",
        ]
        assert out.count("Lost: 0") == 2
        assert sum(line.endswith("nothing left in memory.") for line in out) == 2
        assert f"Stopping the local BigQuery emulator (pid {emulator_pid})" in out
        # make's shell ends with gunicorn; its EXIT trap finds nothing left to stop.
        make.wait(timeout=20)
        assert _session_members(make.pid) == []
        assert not process_alive(emulator_pid)
        assert [p for p in (port, rest, grpc) if _listening(p)] == []
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((Path(service_env["OMK_RUN_DIR"]) / "bqemulator.pid").read_text()), signal.SIGKILL)
