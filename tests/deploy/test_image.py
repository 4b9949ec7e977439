"""The Dockerfile builds what the issue asks, and its CMD runs here exactly as written.

`docker build` cannot run on this machine (no container runtime); the command line is the part
that can break without one, so it is started as the image starts it: same argv from the CMD,
the image's ENV, the working directory's code, the Cloud Run platform env and service env."""

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.deploy.support import (
    CLOUD_RUN_ENV,
    GKE_ENV,
    ROOT,
    Dockerfile,
    cloud_run_services,
    configmaps,
    container_env,
    find,
    pod_spec,
    prestop_seconds,
    relocate_tmp,
)
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


def test_dockerfile__installs_the_hashed_lock_alone():
    """The one pip install is the lock's, hash-checked and resolving nothing (tests/deploy/
    test_requirements.py checks the lock itself): an image built twice has the same packages."""
    instructions = Dockerfile().instructions
    installs = [args for kw, args in instructions if kw == "RUN" and "pip install" in args]
    assert len(installs) == 1, installs
    (install,) = installs
    pip = shlex.split(install.split("&&")[0])
    assert pip[:2] == ["pip", "install"]
    assert "--require-hashes" in pip
    assert "--no-deps" in pip
    (copy_lock,) = [args.split() for kw, args in instructions if kw == "COPY" and "requirements.txt" in args]
    assert copy_lock[0] == "requirements.txt"
    assert pip[pip.index("-r") + 1] == copy_lock[1]
    assert pip.count("-r") == 1
    assert "pip check" in install


def test_dockerignore__keeps_what_the_cmd_needs():
    ignored = dockerignored()
    for needed in ("manage.py", "omk", "lifecycle", "settings", "requirements.txt"):
        assert needed not in ignored
        assert (ROOT / needed).exists()
    for heavy in (".venv", ".git", "tests"):
        assert heavy in ignored


# What the gunicorn master loads before it forks (lifecycle.warmup), and where each module came from.
_MASTER_MODULES = """
import json, sys, django
django.setup()
from lifecycle.warmup import preload_request_path
preload_request_path()
print(json.dumps([m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]))
"""


def test_dockerfile__every_module_the_master_loads_is_compiled_in_the_image(tmp_path, service_env):
    """At run time nothing writes bytecode (PYTHONDONTWRITEBYTECODE, a read-only /app): a module
    the image lacks it for is compiled from source by every start of every instance."""
    dockerfile = Dockerfile()
    steps = dockerfile.final_stage
    copy_code = next(i for i, (kw, args) in enumerate(steps) if kw == "COPY" and args.split()[0] == ".")
    compile_step = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "compileall" in args)
    user = next(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    assert copy_code < compile_step < user  # the code as shipped, while root can still write it
    assert dockerfile.env["PYTHONDONTWRITEBYTECODE"] == "1"

    # The image's /app: the code as .dockerignore lets it in, then the Dockerfile's own command.
    app = tmp_path / "app"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(*(p.removeprefix("**/") for p in dockerignored())))
    command = shlex.split(steps[compile_step][1].replace("/app", str(app)))
    assert command[0] == "python"
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=120)

    env = {**service_env, "PYTHONDONTWRITEBYTECODE": "1", "DJANGO_SETTINGS_MODULE": "settings.test"}
    loaded = subprocess.run(
        [sys.executable, "-c", _MASTER_MODULES], cwd=app, env=env, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    ours = [Path(f) for f in json.loads(loaded.stdout.splitlines()[-1]) if f.startswith(str(app))]
    assert len(ours) > 50  # the project's own modules were loaded from the copy
    missing = [str(f.relative_to(app)) for f in ours if not Path(importlib.util.cache_from_source(str(f))).exists()]
    assert missing == []


class Container:
    """A manifest's container run here as the platform runs it: the image's ENV (its venv being
    this checkout's .venv, its /tmp a private directory like the pod's emptyDir), the manifest's
    env, the platform's env, the code in the image's WORKDIR, and the argv from the manifest or,
    without one, the Dockerfile's CMD."""

    def __init__(self, container: dict, *, configmaps: dict, platform_env: dict, service_env: dict, tmp_path: Path):
        self.dockerfile = Dockerfile()
        assert self.dockerfile.workdir == "/app"  # holds the repository (COPY . /app): ROOT here
        self.argv = container.get("command", []) + container.get("args", []) or self.dockerfile.cmd
        self.port = free_port()
        self.tmp_path = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in self.dockerfile.env.items() if k != "PATH"},
            **container_env(container, configmaps),
            # The Secrets, resolved to this test run's database and Redis db.
            "SECRET_KEY": "s" * 50,
            "PAYMENT_WEBHOOK_SECRET": "w" * 32,
            "DATABASE_URL": service_env["DATABASE_URL"],
            "REDIS_URL": service_env["REDIS_URL"],
            **platform_env,
            "PORT": str(self.port),
            # Lighter than production on a shared test machine; the argv is unchanged.
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "2",
        }
        self.env = {
            **relocate_tmp(env, tmp_path),
            "PATH": self.dockerfile.env["PATH"].replace("/opt/venv/bin", str(Path(sys.executable).parent)),
        }
        assert self.env["DJANGO_SETTINGS_MODULE"] == "settings.production"
        assert self.env["DATABASE_URL"].rsplit("/", 1)[1].startswith("test")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "container.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Container":
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run a command in the container (a preStop exec hook), with the container's env."""
        return subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def wait_for(self, path: str, status: int, timeout: float = 30) -> requests.Response:
        deadline = time.monotonic() + timeout
        response = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log()}"
            with contextlib.suppress(requests.RequestException):
                response = requests.get(self.url + path, timeout=5)
                if response.status_code == status:
                    return response
            time.sleep(0.2)
        raise AssertionError(f"{path} did not answer {status} (last: {response and response.text}):\n{self.log()}")

    def terminate(self, budget: float) -> float:
        """SIGTERM to the process the platform signals; it must exit 0 within `budget` seconds."""
        started = time.monotonic()
        os.kill(self.process.pid, signal.SIGTERM)
        returncode = self.process.wait(timeout=budget)
        elapsed = time.monotonic() - started
        assert returncode == 0, self.log()
        return elapsed

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process is not None:
            self._log.close()


@pytest.fixture
def run_container(service_env, tmp_path):
    started: list[Container] = []

    def run(container: dict, *, platform_env: dict, configmaps: dict | None = None) -> Container:
        instance = Container(
            container,
            configmaps=configmaps or {},
            platform_env=platform_env,
            service_env=service_env,
            tmp_path=tmp_path / f"c{len(started)}",
        )
        started.append(instance)
        return instance.start()

    yield run
    for instance in started:
        instance.kill()


def web_container(service: dict) -> dict:
    return next(c for c in service["spec"]["template"]["spec"]["containers"] if c.get("ports"))


# transaction=True: the instance must see the test database (service_env without a db mark points
# at the development database), and its own writes are cleaned up after the test.
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_image_cmd__serves_on_cloud_run_and_stops_on_sigterm(run_container):
    web = run_container(web_container(cloud_run_services()["web.yaml"]), platform_env=CLOUD_RUN_ENV)
    assert web.argv == ["gunicorn", "-c", "omk/gunicorn.conf.py"]
    health = web.wait_for("/health", 200)
    assert health.json() == {"status": "ok"}
    # The process started is gunicorn itself (no shell in between): it is what gets SIGTERM.
    # (gunicorn is a Python entry-point script: the kernel shows its interpreter, then the script.)
    argv = Path(f"/proc/{web.process.pid}/cmdline").read_bytes().split(b"\0")
    assert not argv[0].endswith((b"/sh", b"/bash", b"/dash"))
    assert any(arg.endswith(b"/gunicorn") for arg in argv[:2]), argv
    # The startup probe's path: 200 once startup recovery is done.
    web.wait_for("/ready", 200)
    # Cloud Run's budget: SIGKILL 10 s after SIGTERM.
    assert web.terminate(budget=10) < 10


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gke_web__prestop_drains_then_sigterm_stops_within_grace(run_container):
    deployment = find("Deployment", "omk-web")
    (container,) = pod_spec(deployment)["containers"]
    web = run_container(container, platform_env=GKE_ENV, configmaps=configmaps())
    web.wait_for("/ready", 200)
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    deleted = time.monotonic()
    result = web.exec(hook, timeout=prestop_seconds(container) + 5)
    hook_seconds = time.monotonic() - deleted
    assert result.returncode == 0, result.stdout + result.stderr
    # Within the manifest's bound, and it waited the drain delay while readiness said 503.
    assert hook_seconds < prestop_seconds(container)
    assert hook_seconds >= float(web.env["DRAIN_DELAY"])
    assert requests.get(web.url + "/ready", timeout=5).status_code == 503
    assert requests.get(web.url + "/health", timeout=5).status_code == 200
    # Then the kubelet sends SIGTERM; the pod must be gone before terminationGracePeriodSeconds.
    web.terminate(budget=pod_spec(deployment)["terminationGracePeriodSeconds"] - hook_seconds)
    assert time.monotonic() - deleted < pod_spec(deployment)["terminationGracePeriodSeconds"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gke_worker__command_runs_and_stops_on_sigterm(run_container):
    deployment = find("Deployment", "omk-worker")
    (container,) = pod_spec(deployment)["containers"]
    worker = run_container(container, platform_env=GKE_ENV, configmaps=configmaps())
    assert worker.argv == ["python", "manage.py", "worker"]
    deadline = time.monotonic() + 30
    while "ready" not in worker.log().lower() and time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.log()
        time.sleep(0.2)
    assert worker.process.poll() is None, worker.log()
    worker.terminate(budget=pod_spec(deployment)["terminationGracePeriodSeconds"])
