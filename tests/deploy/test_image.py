"""The Dockerfile builds what the issue asks, and its CMD runs here exactly as written.

`docker build` cannot run on this machine (no container runtime); the command line is the part
that can break without one, so it is started as the image starts it: same argv from the CMD,
the image's ENV, the working directory's code, the Cloud Run platform env and service env."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.deploy.support import ROOT, Dockerfile, cloud_run_services, container_env, relocate_tmp
from tests.support.instances import free_port


def dockerignored() -> list[str]:
    return [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]


def test_dockerfile__slim_python_311_non_root_exec_form():
    dockerfile = Dockerfile()
    assert all(image.startswith("python:3.11-slim") for image in dockerfile.froms if ":" in image)
    # Exec form (a JSON list): the process is gunicorn itself, PID 1, and gets SIGTERM.
    assert isinstance(dockerfile.cmd, list)
    assert dockerfile.cmd == ["gunicorn", "-c", "omk/gunicorn.conf.py"]
    uid = dockerfile.user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it; and matching the manifests' runAsUser.
    assert uid.isdigit()
    assert int(uid) != 0
    assert int(uid) == 10001


def test_dockerfile__dependencies_in_their_own_layer():
    """requirements.txt is installed before the code is copied: a code change keeps that layer."""
    instructions = Dockerfile().instructions
    install = next(i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "requirements.txt" in args)
    copy_code = next(i for i, (kw, args) in enumerate(instructions) if kw == "COPY" and args.split()[0] == ".")
    copy_reqs = next(i for i, (kw, args) in enumerate(instructions) if kw == "COPY" and "requirements.txt" in args)
    assert copy_reqs < install < copy_code


def test_dockerignore__keeps_what_the_cmd_needs():
    ignored = dockerignored()
    for needed in ("manage.py", "omk", "lifecycle", "settings", "requirements.txt"):
        assert needed not in ignored
        assert (ROOT / needed).exists()
    for heavy in (".venv", ".git", "tests"):
        assert heavy in ignored


@pytest.mark.slow
# transaction=True: the instance must see the test database (service_env without a db mark points
# at the development database), and its own writes are cleaned up after the test.
@pytest.mark.django_db(transaction=True)
def test_image_cmd__serves_health_and_stops_on_sigterm(service_env, tmp_path):
    dockerfile = Dockerfile()
    web = next(c for c in cloud_run_services()["web.yaml"]["spec"]["template"]["spec"]["containers"] if c.get("ports"))
    port = free_port()
    env = {
        # The image's ENV, its venv being this checkout's .venv, and its /tmp the test's own.
        **relocate_tmp({k: v for k, v in dockerfile.env.items() if k != "PATH"}, tmp_path),
        "PATH": dockerfile.env["PATH"].replace("/opt/venv/bin", str(Path(sys.executable).parent)),
        # Cloud Run's service env (secrets resolved to this test run's database and Redis db).
        **container_env(web, {}),
        "SECRET_KEY": "s" * 50,
        "DATABASE_URL": service_env["DATABASE_URL"],
        "REDIS_URL": service_env["REDIS_URL"],
        # What Cloud Run sets.
        "K_SERVICE": "omk-web",
        "K_REVISION": "omk-web-00001-abc",
        "K_CONFIGURATION": "omk-web",
        "PORT": str(port),
        # Lighter than production's 2 x 40 on a shared test machine; the argv is unchanged.
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
    }
    assert env["DJANGO_SETTINGS_MODULE"] == "settings.production"
    assert env["DATABASE_URL"].rsplit("/", 1)[1].startswith("test")
    log = (tmp_path / "image.log").open("wb")
    # cwd: the image's WORKDIR holds the repository's files (COPY . /app).
    assert dockerfile.workdir == "/app"
    process = subprocess.Popen(
        dockerfile.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(requests.RequestException):
                health = requests.get(f"{url}/health", timeout=2)
                break
            time.sleep(0.1)
        assert health is not None, (tmp_path / "image.log").read_text()
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        # The process started is gunicorn itself (no shell in between): it is what gets SIGTERM.
        assert "gunicorn" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        ready = None
        while time.monotonic() < deadline:
            ready = requests.get(f"{url}/ready", timeout=5)
            if ready.status_code == 200:
                break
            time.sleep(0.2)
        assert ready is not None
        assert ready.status_code == 200, ready.text

        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        # Cloud Run's budget: SIGKILL 10 s after SIGTERM.
        returncode = process.wait(timeout=10)
        assert returncode == 0, (tmp_path / "image.log").read_text()
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
