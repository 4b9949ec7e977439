"""The grace budget holds on every platform, and every path and command the manifests name exists.

The numbers come from the code, not from the manifests' comments: gunicorn's config and
lifecycle.platform are evaluated in a fresh process with the environment each container gets.
"""

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.management import get_commands
from django.urls import Resolver404, resolve

from lifecycle.platform import CLOUD_RUN_BUDGET_SECONDS
from lifecycle.worker_probes import PROBE_PATHS, WorkerProbes, worker_probes_serve
from tests.deploy.support import (
    BASE_IMAGE_ENV,
    CLOUD_RUN_ENV,
    GKE_ENV,
    Dockerfile,
    base_documents,
    cloud_run_containers,
    cloud_run_services,
    configmaps,
    container_env,
    find,
    manage_py_commands,
    pod_spec,
    prestop_seconds,
    runtime_env,
    shutdown_settings,
)
from tests.support.instances import free_port


def gke_budget(deployment: dict, scratch: Path) -> dict:
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    env = runtime_env(container_env(container, configmaps()), GKE_ENV)
    effective = shutdown_settings(env, scratch)
    drain = effective["drain_delay"] if effective["drain_delay"] is not None else float(env.get("DRAIN_DELAY", 0))
    # The web runs gunicorn (graceful_timeout); the worker its own shutdown, bounded by the deadline.
    stop = effective["graceful_timeout"] if "command" not in container else effective["shutdown_deadline"]
    prestop = prestop_seconds(container)
    return {
        "prestop": prestop,
        "drain_delay": drain,
        "stop": stop,
        "margin": effective["margin"],
        "needed": prestop + drain + stop + effective["margin"],
        "grace": spec["terminationGracePeriodSeconds"],
        "effective": effective,
        "env": env,
    }


@pytest.mark.parametrize("name", ["omk-web", "omk-worker"])
def test_gke_grace_budget__covers_prestop_drain_and_graceful_timeout(name, tmp_path):
    budget = gke_budget(find("Deployment", name), tmp_path)
    assert budget["effective"]["platform"] == "gke"
    assert budget["needed"] <= budget["grace"], budget


def test_gke_grace_budget__web_spends_it_as_documented(tmp_path):
    budget = gke_budget(find("Deployment", "omk-web"), tmp_path)
    # The grace budget table of docs/deployment.md: 10 + 5 + 27 + 3 = 45.
    assert (budget["prestop"], budget["drain_delay"], budget["stop"], budget["margin"], budget["grace"]) == (
        10.0,
        5.0,
        27,
        3.0,
        45,
    )


def test_gke_grace_budget__check_fails_when_the_grace_period_is_short(tmp_path):
    deployment = find("Deployment", "omk-web")
    pod_spec(deployment)["terminationGracePeriodSeconds"] = 44
    budget = gke_budget(deployment, tmp_path)
    assert budget["needed"] > budget["grace"]


def test_gke_grace_budget__unbounded_prestop_is_refused():
    container = {"lifecycle": {"preStop": {"exec": {"command": ["python", "manage.py", "drain"]}}}}
    with pytest.raises(AssertionError, match="no bound"):
        prestop_seconds(container)


@pytest.mark.parametrize("filename", ["web.yaml", "worker.yaml"])
def test_cloud_run_budget__within_ten_seconds(filename, tmp_path):
    service = cloud_run_services()[filename]
    for container in service["spec"]["template"]["spec"]["containers"]:
        assert "lifecycle" not in container, "Cloud Run has no preStop"
        env = runtime_env(container_env(container, {}), CLOUD_RUN_ENV)
        effective = shutdown_settings(env, tmp_path / container["name"])
        assert effective["platform"] == "cloud_run"
        assert effective["shutdown_budget"] <= CLOUD_RUN_BUDGET_SECONDS <= 10
        drain = effective["drain_delay"] or 0.0
        stop = effective["graceful_timeout"] if "command" not in container else effective["shutdown_deadline"]
        assert drain + stop + effective["margin"] <= 10, effective


def test_drain_delay__the_manifests_name_is_the_one_the_code_reads(tmp_path):
    """DRAIN_DELAY in the ConfigMap must set the delay the service uses (not a name nobody reads)."""
    budget = gke_budget(find("Deployment", "omk-web"), tmp_path)
    assert budget["effective"]["drain_delay_source"] == "settings"
    assert budget["effective"]["drain_delay"] == float(budget["env"]["DRAIN_DELAY"])


# --- Every probe path and command a manifest names exists in the code --------------------------


PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def probe_paths() -> set[str]:
    """The web containers' probe paths (the worker's are served by lifecycle.worker_probes)."""
    paths = set()
    containers = [
        c
        for _, doc in base_documents()
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "omk-worker"
        for c in pod_spec(doc)["containers"]
    ]
    containers += [c for s in cloud_run_services().values() for c in s["spec"]["template"]["spec"]["containers"]]
    for container in containers:
        for probe in PROBES:
            if probe in container:
                paths.add(container[probe]["httpGet"]["path"])
    return paths


def test_probes__are_the_lifecycle_probes():
    assert probe_paths() == {"/health", "/ready"}
    web = pod_spec(find("Deployment", "omk-web"))["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    assert web["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "startupProbe" in web


@pytest.mark.parametrize("path", sorted(probe_paths()))
def test_probe_path__resolves_in_the_url_conf(path):
    resolve(path)


def test_worker_probes__on_the_port_and_paths_worker_probes_serves():
    """The kubelet probes the port the worker serves its probes on, at paths that module answers."""
    (container,) = pod_spec(find("Deployment", "omk-worker"))["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    probes = {name: container[name]["httpGet"] for name in PROBES}
    assert {name: get["path"] for name, get in probes.items()} == {
        "startupProbe": "/health",
        "livenessProbe": "/health",
        "readinessProbe": "/ready",
    }
    assert {get["path"] for get in probes.values()} <= set(PROBE_PATHS)
    assert {get["port"] for get in probes.values()} == {"metrics"}
    assert str(ports["metrics"]) == env["WORKER_METRICS_PORT"]


def test_worker_probe_paths__answered_by_worker_probes():
    """Each path of the manifest, asked of a running probe server: answered, not a 404."""

    class Beat:
        stopped = False
        last_attempt = last_written = time.monotonic()

    (container,) = pod_spec(find("Deployment", "omk-worker"))["containers"]
    probes = WorkerProbes(heartbeat=Beat(), state=lambda: "ready", hung_seconds=30, ttl=15)  # type: ignore[arg-type]
    server = worker_probes_serve(port := free_port(), probes)
    try:
        for name in PROBES:
            path = container[name]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                assert response.status == 200, name
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-probe", timeout=5)
    finally:
        server.shutdown()


def metrics_paths() -> set[str]:
    return {
        doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/path")
        for _, doc in base_documents()
        if doc["kind"] == "Deployment"
    } - {None}


@pytest.mark.parametrize("path", sorted(metrics_paths()))
def test_metrics_path__resolves_in_the_url_conf(path):
    resolve(path)


def test_url_check__fails_for_a_missing_path():
    with pytest.raises(Resolver404):
        resolve("/no-such-probe")


def manifest_commands() -> set[str]:
    names = set()
    containers = [c for _, doc in base_documents() if doc["kind"] == "Deployment" for c in pod_spec(doc)["containers"]]
    containers += cloud_run_containers()
    for container in containers:
        names.update(manage_py_commands(container.get("command", []) + container.get("args", [])))
        hook = container.get("lifecycle", {}).get("preStop", {}).get("exec")
        if hook:
            names.update(manage_py_commands(hook["command"]))
    return names


def test_manifest_commands__are_the_ones_assumed():
    # drain (the web's preStop) and worker (the worker's command).
    assert manifest_commands() == {"drain", "worker"}


@pytest.mark.parametrize("name", sorted(manifest_commands()))
def test_manifest_command__is_a_django_command(name):
    assert name in get_commands(), f"manage.py {name} (named in the manifests) does not exist"


def test_web_container__runs_the_image_cmd():
    """The web Deployment and Cloud Run web service start the image's CMD (gunicorn as PID 1)."""
    assert Dockerfile().cmd[0] == "gunicorn"
    web = pod_spec(find("Deployment", "omk-web"))["containers"][0]
    assert "command" not in web
    assert "args" not in web
    for service in cloud_run_services().values():
        ingress = next(c for c in service["spec"]["template"]["spec"]["containers"] if c.get("ports"))
        assert "command" not in ingress
        assert "args" not in ingress


# --- Every environment variable the manifests set is one the code reads --------------------------

# Read by a library or by Python itself, not by our code.
LIBRARY_ENV = {"PROMETHEUS_MULTIPROC_DIR"}
# Read by code another issue adds: checked once that code is in the tree (strict xfail before).


def manifest_env_names() -> set[str]:
    names = {key for data in configmaps().values() for key in data}
    containers = [c for _, doc in base_documents() if doc["kind"] == "Deployment" for c in pod_spec(doc)["containers"]]
    containers += cloud_run_containers()
    names |= {var["name"] for c in containers for var in c.get("env", [])}
    # The Dockerfile's own ENV, less what python:3.11-slim sets and what Python and pip read.
    image = {key for key in Dockerfile().env if key not in BASE_IMAGE_ENV and not key.startswith(("PIP_", "PYTHON"))}
    return names | image


def code_reads(name: str) -> bool:
    root = Path(__file__).resolve().parents[2]
    for path in root.rglob("*.py"):
        if path.parts[len(root.parts)] in (".venv", "tests"):
            continue
        text = path.read_text(errors="replace")
        if f'"{name}"' in text or f"'{name}'" in text:
            return True
    return False


@pytest.mark.parametrize("name", sorted(manifest_env_names() - LIBRARY_ENV))
def test_manifest_env__is_read_by_the_code(name):
    assert code_reads(name), f"{name} is set by the manifests but no code reads it (a typo, or a renamed setting)"


def test_manifest_env_check__fails_for_an_unknown_name():
    assert not code_reads("DRAIN_DELAY_SECONDZ")
