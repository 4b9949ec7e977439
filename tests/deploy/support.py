"""Reading the deployment files as the platforms read them: manifests, the Dockerfile, the env a
container gets, and what the code makes of that env (gunicorn's timeouts, the drain delay)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_BASE = ROOT / "k8s" / "base"
CLOUD_RUN = ROOT / "k8s" / "cloudrun"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30.0"

# What the envsubst step of docs/deployment.md fills in the Cloud Run files.
CLOUD_RUN_VARS = {
    "PROJECT_ID": "omk-prod",
    "IMAGE": "europe-west1-docker.pkg.dev/omk-prod/omk/omk-hive:1.0.0",
    "ALLOWED_HOSTS": "hive.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://hive.example.com",
    "WORKER_URL": "https://omk-worker-abc123-ew.a.run.app",
    "REGION": "europe-west1",
}
# Values the platforms take from Secrets: stand-ins, only to let the settings load.
SECRET_STANDINS = {
    "SECRET_KEY": "x" * 50,
    "PAYMENT_WEBHOOK_SECRET": "w" * 32,
    "WAKE_TOKEN": "k" * 32,
    "DATABASE_URL": "postgres://omk@127.0.0.1:5432/omk",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization() -> dict[str, Any]:
    return load_yaml_documents(K8S_BASE / "kustomization.yaml")[0]


def base_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every resource kustomize applies from k8s/base, in kustomization order."""
    for name in kustomization()["resources"]:
        for doc in load_yaml_documents(K8S_BASE / name):
            yield name, doc


def render_cloud_run(path: Path, variables: Mapping[str, str] = CLOUD_RUN_VARS) -> dict[str, Any]:
    """The Cloud Run file after the deployment page's envsubst (which fills only the ${NAME} it lists).

    A ${NAME} without a value is an error here (envsubst would leave an empty string)."""

    def fill(match: re.Match) -> str:
        return variables[match.group(1)]

    text = re.sub(r"\$\{(\w+)\}", fill, path.read_text())
    return load_yaml_documents_from_text(text)[0]


def load_yaml_documents_from_text(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def cloud_run_services() -> dict[str, dict[str, Any]]:
    return {path.name: render_cloud_run(path) for path in sorted(CLOUD_RUN.glob("*.yaml"))}


# The scheduled drain: a Cloud Run job and the Cloud Scheduler job that executes it.
CLOUD_RUN_JOBS = CLOUD_RUN / "jobs"


def cloud_run_files() -> list[Path]:
    """Every file the Cloud Run envsubst step fills: the services and the scheduled drain's."""
    return sorted(CLOUD_RUN.glob("*.yaml")) + sorted(CLOUD_RUN_JOBS.glob("*.yaml"))


def cloud_run_drain_job() -> dict[str, Any]:
    return render_cloud_run(CLOUD_RUN_JOBS / "drain.yaml")


def cloud_run_drain_schedule() -> dict[str, Any]:
    return render_cloud_run(CLOUD_RUN_JOBS / "drain-schedule.yaml")


def cloud_run_containers() -> list[dict[str, Any]]:
    """The containers of every Cloud Run service and of the drain job."""
    containers = [c for s in cloud_run_services().values() for c in s["spec"]["template"]["spec"]["containers"]]
    return containers + cloud_run_drain_job()["spec"]["template"]["spec"]["template"]["spec"]["containers"]


def find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in base_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise LookupError(f"no {kind} {name} in k8s/base")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container_env(container: dict[str, Any], configmaps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment the kubelet gives a container: envFrom first, then env (which wins).

    Secret references get the stand-in values; a reference to a ConfigMap or key that does not
    exist raises, as the kubelet would refuse to start the container.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = SECRET_STANDINS[var["name"]]
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]][ref["key"]]
    return env


def configmaps() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["data"] for _, doc in base_documents() if doc["kind"] == "ConfigMap"}


def manage_py_commands(command: list[str]) -> list[str]:
    """`manage.py NAME` in an argv (possibly wrapped, e.g. by `timeout 10`)."""
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg.endswith("manage.py")]


# --- What the code makes of a container's environment -------------------------------------------

_PROBE_SCRIPT = r"""
import json, os, runpy, sys
sys.path.insert(0, os.getcwd())
conf = runpy.run_path("omk/gunicorn.conf.py")
from lifecycle.platform import detect_platform, shutdown_margin
info = detect_platform()
result = {
    "platform": str(info.platform),
    "shutdown_budget": info.shutdown_budget,
    "shutdown_deadline": info.shutdown_deadline,
    "margin": shutdown_margin(info.shutdown_budget),
    "graceful_timeout": conf["graceful_timeout"],
    "drain_delay": None,
    "drain_delay_source": None,
}
# The drain delay as the service computes it.
import django
django.setup()
from lifecycle.conf import lifecycle_settings
value = lifecycle_settings.DRAIN_DELAY
result["drain_delay_source"] = "settings"
if value is None:
    from lifecycle.platform import default_drain_delay
    value = default_drain_delay(info)
    result["drain_delay_source"] = "platform default"
result["drain_delay"] = float(value)
print(json.dumps(result))
"""


def shutdown_settings(env: Mapping[str, str], scratch: Path) -> dict[str, Any]:
    """gunicorn's config and lifecycle.platform evaluated in a fresh process with `env`, as in the
    container. Paths under /tmp are moved under `scratch` (the pod's emptyDir), so nothing here
    touches this machine's /tmp/omk or /tmp/prometheus."""
    run_env = {key: value for key, value in os.environ.items() if not key.startswith(("K_", "KUBERNETES_"))}
    run_env.pop("TERMINATION_GRACE_PERIOD", None)
    run_env.update(relocate_tmp(env, scratch))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"evaluating the config with the container's env failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def relocate_tmp(env: Mapping[str, str], scratch: Path) -> dict[str, str]:
    moved = {}
    for key, value in env.items():
        if value == "/tmp" or value.startswith("/tmp/"):
            value = str(scratch / value.removeprefix("/tmp").lstrip("/"))
            Path(value).mkdir(parents=True, exist_ok=True)
        moved[key] = value
    return moved


# --- The Dockerfile -------------------------------------------------------------------------------

# What python:3.11-slim itself sets (only PATH matters to the commands here).
BASE_IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class Dockerfile:
    """The final stage of the Dockerfile: its base, env, workdir, user, CMD and the instructions."""

    def __init__(self, path: Path = ROOT / "Dockerfile"):
        self.path = path
        self.instructions = self._instructions(path.read_text())
        stages: dict[str, dict[str, str]] = {}
        self.env: dict[str, str] = {}
        self.froms: list[str] = []
        self.workdir = "/"
        self.user = "root"
        self.cmd: Any = None
        self.final_stage: list[tuple[str, str]] = []
        for keyword, args in self.instructions:
            if keyword == "FROM":
                parts = args.split()
                self.froms.append(parts[0])
                self.env = dict(stages.get(parts[0], BASE_IMAGE_ENV))
                if len(parts) == 3 and parts[1].upper() == "AS":
                    stages[parts[2]] = self.env
                self.final_stage = []
                self.workdir, self.user, self.cmd = "/", "root", None
                continue
            self.final_stage.append((keyword, args))
            if keyword == "ENV":
                for pair in shlex.split(args):
                    key, _, value = pair.partition("=")
                    self.env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)
            elif keyword == "WORKDIR":
                self.workdir = args
            elif keyword == "USER":
                self.user = args
            elif keyword == "CMD":
                self.cmd = json.loads(args) if args.lstrip().startswith("[") else args

    @staticmethod
    def _instructions(text: str) -> list[tuple[str, str]]:
        logical: list[str] = []
        current = ""
        for line in text.splitlines():
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                current += stripped[:-1] + " "
                continue
            logical.append(current + stripped)
            current = ""
        result = []
        for line in logical:
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
        return result


def runtime_env(container_env: Mapping[str, str], platform_env: Mapping[str, str]) -> dict[str, str]:
    """What a process in the container sees: the image's ENV, the manifest's env, the platform's.

    PATH stays this machine's (the image's /opt/venv is this checkout's .venv here)."""
    image_env = {key: value for key, value in Dockerfile().env.items() if key != "PATH"}
    return {**image_env, **container_env, **platform_env}


# --- The platforms' own environment -------------------------------------------------------------

GKE_ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
CLOUD_RUN_ENV = {
    "K_SERVICE": "omk-web",
    "K_REVISION": "omk-web-00001-abc",
    "K_CONFIGURATION": "omk-web",
    "PORT": "8080",
}


def prestop_seconds(container: dict) -> float:
    """The longest the preStop hook can take, from the manifest itself."""
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    # The kubelet does not bound an exec hook by itself: the manifest must (coreutils timeout).
    assert command[0] == "timeout", f"preStop {command} has no bound: wrap it in `timeout SECONDS`"
    return float(command[1])
