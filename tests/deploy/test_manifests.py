"""Every manifest validated offline: Kubernetes kinds against kubernetes-validate's bundled schemas
(strict: unknown fields are errors), custom resources against the JSON schemas in schemas/."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import (
    CLOUD_RUN,
    CLOUD_RUN_VARS,
    K8S_BASE,
    KUBERNETES_VERSION,
    ROOT,
    SCHEMAS,
    base_documents,
    cloud_run_drain_job,
    cloud_run_drain_schedule,
    cloud_run_files,
    cloud_run_services,
    find,
    kustomization,
    render_cloud_run,
)

CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
    ("serving.knative.dev/v1", "Service"): "knative-service-v1.json",
    ("run.googleapis.com/v1", "Job"): "cloud-run-job-v1.json",
}


def custom_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate_document(doc: dict) -> None:
    """Raise if `doc` is not valid, or if there is no schema to say so (never a silent pass)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_SCHEMAS:
        custom_validator(*key).validate(doc)
        return
    # SchemaNotFoundError (an unknown kind or a removed apiVersion) propagates: a failure.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def as_pod(service: dict) -> dict:
    """A Knative revision's PodSpec fields as a Kubernetes Pod, for kubernetes-validate.

    Knative adds the revision-only fields (dropped here) and defaults a probe's port to the
    container's port (filled here, as Knative does)."""
    spec = copy.deepcopy(service["spec"]["template"]["spec"])
    for key in ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        spec.pop(key, None)
    for container in spec["containers"]:
        container.setdefault("name", "user-container")
        port = next((p["containerPort"] for p in container.get("ports", [])), 8080)
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(probe_name)
            for handler in ("httpGet", "tcpSocket"):
                if probe and handler in probe:
                    probe[handler].setdefault("port", port)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": service["metadata"]["name"]}, "spec": spec}


@pytest.mark.parametrize(("filename", "doc"), list(base_documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_base_manifest__valid(filename, doc):
    validate_document(doc)


@pytest.mark.parametrize("filename", sorted(path.name for path in CLOUD_RUN.glob("*.yaml")))
def test_cloud_run_service__valid(filename):
    service = render_cloud_run(CLOUD_RUN / filename)
    validate_document(service)
    kubernetes_validate.validate(as_pod(service), KUBERNETES_VERSION, strict=True)


def test_kustomization__lists_every_manifest():
    listed = set(kustomization()["resources"])
    on_disk = {path.name for path in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_kustomization__image_name_matches_containers():
    images = {image["name"] for image in kustomization()["images"]}
    containers = {
        container["image"]
        for _, doc in base_documents()
        if doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert containers <= images


def test_base_manifests__cover_the_issue():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in base_documents()}
    assert {
        ("Deployment", "omk-web"),
        ("Deployment", "omk-worker"),
        ("Service", "omk-web"),
        ("HorizontalPodAutoscaler", "omk-web"),
        ("PodDisruptionBudget", "omk-web"),
        ("ConfigMap", "omk-hive-config"),
        ("PrometheusRule", "omk-hive"),
    } <= kinds


def test_selectors__match_their_pods():
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in base_documents()}
    web_labels = docs[("Deployment", "omk-web")]["spec"]["template"]["metadata"]["labels"]
    worker_labels = docs[("Deployment", "omk-worker")]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        docs[("Deployment", "omk-web")]["spec"]["selector"]["matchLabels"],
        docs[("Service", "omk-web")]["spec"]["selector"],
        docs[("PodDisruptionBudget", "omk-web")]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= web_labels.items()
        # The Service must not send traffic to the worker.
        assert not selector.items() <= worker_labels.items()
    target = docs[("HorizontalPodAutoscaler", "omk-web")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "omk-web")


def test_worker__is_scraped_on_the_port_it_serves_metrics_on():
    worker = next(doc for _, doc in base_documents() if doc["metadata"]["name"] == "omk-worker")["spec"]["template"]
    annotations = worker["metadata"]["annotations"]
    (container,) = worker["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["WORKER_METRICS_PORT"] == str(ports["metrics"])


def test_hpa__as_the_issue_says():
    hpa = next(doc for _, doc in base_documents() if doc["kind"] == "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 10)
    assert hpa["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    # The HPA owns the replica count: a `replicas` in the Deployment would fight it on every apply.
    assert "replicas" not in find("Deployment", "omk-web")["spec"]


def test_cloud_run__as_the_issue_says():
    services = cloud_run_services()
    web = services["web.yaml"]["spec"]["template"]
    assert web["metadata"]["annotations"]["autoscaling.knative.dev/minScale"] == "0"
    assert web["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"] == "10"
    assert web["spec"]["containerConcurrency"] == 80
    assert web["spec"]["timeoutSeconds"] == 300
    (container,) = web["spec"]["containers"]
    assert {"startupProbe", "livenessProbe"} <= container.keys()
    web_env = {var["name"]: var.get("value") for var in container["env"]}
    # The web wakes the worker service at the path that serves wake-ups, with an ID token for it.
    assert web_env["WAKE_URL"] == web_env["WAKE_AUDIENCE"] + "/internal/wake"
    worker = services["worker.yaml"]["spec"]["template"]
    # Scales to zero, CPU only while it serves a wake-up; one container, gunicorn, that serves it.
    assert worker["metadata"]["annotations"]["autoscaling.knative.dev/minScale"] == "0"
    assert worker["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] == "true"
    (ingress,) = worker["spec"]["containers"]
    assert ingress.get("ports")
    assert "command" not in ingress
    env = {var["name"]: var.get("value") for var in ingress["env"]}
    assert env["WAKE_SERVE"] == "true"
    # The drain ends before Cloud Run cuts off the wake-up's request.
    assert float(env["DRAIN_MAX_SECONDS"]) < worker["spec"]["timeoutSeconds"]


def test_cloud_run__every_service_bills_cpu_only_during_requests():
    for name, service in cloud_run_services().items():
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        assert annotations["run.googleapis.com/cpu-throttling"] == "true", name


def test_cloud_run_drain_job__valid_and_runs_the_drain():
    job = cloud_run_drain_job()
    validate_document(job)
    task = job["spec"]["template"]["spec"]["template"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": job["metadata"]["name"]}}
    pod["spec"] = {key: value for key, value in task.items() if key not in ("maxRetries", "timeoutSeconds")}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    (container,) = task["containers"]
    assert container["command"] == ["python", "manage.py", "worker", "--until-empty"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    # One run ends before the next begins: the drain's own limit, then the task's timeout.
    assert float(env["DRAIN_MAX_SECONDS"]) < task["timeoutSeconds"] < schedule_period_seconds()


def schedule_period_seconds() -> int:
    (minutes,) = re.fullmatch(r"\*/(\d+) \* \* \* \*", cloud_run_drain_schedule()["schedule"]).groups()
    return int(minutes) * 60


def test_cloud_run_drain_schedule__executes_the_drain_job_every_five_minutes():
    schedule = cloud_run_drain_schedule()
    job = cloud_run_drain_job()
    assert schedule_period_seconds() == 300
    target = schedule["httpTarget"]
    assert target["httpMethod"] == "POST"
    assert target["uri"].endswith(f"/jobs/{job['metadata']['name']}:run")
    assert target["uri"].startswith("https://run.googleapis.com/v2/projects/omk-prod/locations/europe-west1/")
    assert (
        target["oauthToken"]["serviceAccountEmail"]
        == job["spec"]["template"]["spec"]["template"]["spec"]["serviceAccountName"]
    )


def test_cloud_run__startup_cpu_boost_on_every_service():
    """A scaled-from-zero instance imports Django and runs its recovery on boosted CPU."""
    for filename, service in cloud_run_services().items():
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        assert annotations.get("run.googleapis.com/startup-cpu-boost") == "true", filename


def test_cloud_run__every_variable_is_documented():
    """Each ${VAR} the Cloud Run files use is one the deployment page's envsubst step sets."""
    used = {m for path in cloud_run_files() for m in re.findall(r"\$\{(\w+)\}", path.read_text())}
    assert used == set(CLOUD_RUN_VARS)
    page = (ROOT / "docs" / "deployment.md").read_text()
    for name in used:
        assert f"export {name}=" in page, f"docs/deployment.md does not set {name} before envsubst"
    (listed,) = re.findall(r"CLOUD_RUN_VARS='([^']*)'", page)
    assert set(re.findall(r"\$\{(\w+)\}", listed)) == used


def test_cloud_run__json_annotations_parse_and_name_real_containers():
    for service in cloud_run_services().values():
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert isinstance(json.loads(annotations["run.googleapis.com/network-interfaces"]), list)
        names = {c["name"] for c in template["spec"]["containers"]}
        if "run.googleapis.com/container-dependencies" in annotations:
            dependencies = json.loads(annotations["run.googleapis.com/container-dependencies"])
            assert set(dependencies) | {d for deps in dependencies.values() for d in deps} <= names
        mounted = {m["name"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])}
        assert mounted <= {v["name"] for v in template["spec"].get("volumes", [])}


# --- The validation itself can fail (each case is a mistake the validators must catch) -----------


def _web_deployment() -> dict:
    return copy.deepcopy(next(doc for _, doc in base_documents() if doc["kind"] == "Deployment"))


def test_validation__rejects_an_unknown_field():
    doc = _web_deployment()
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_document(doc)


def test_validation__rejects_a_wrong_type():
    doc = _web_deployment()
    doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_document(doc)


def test_validation__fails_on_a_kind_without_schema():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_document({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"}})


def test_validation__fails_on_a_removed_api_version():
    hpa = copy.deepcopy(next(doc for _, doc in base_documents() if doc["kind"] == "HorizontalPodAutoscaler"))
    hpa["apiVersion"] = "autoscaling/v2beta2"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_document(hpa)


def test_validation__rejects_a_prestop_on_cloud_run():
    service = render_cloud_run(CLOUD_RUN / "web.yaml")
    service["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["python", "manage.py", "drain"]}}
    }
    with pytest.raises(jsonschema.ValidationError, match="lifecycle"):
        validate_document(service)


def test_validation__rejects_a_bad_alert_rule():
    rule = copy.deepcopy(next(doc for _, doc in base_documents() if doc["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate_document(rule)
    rule = copy.deepcopy(next(doc for _, doc in base_documents() if doc["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["record"] = "also_a_recording_rule"
    with pytest.raises(jsonschema.ValidationError):
        validate_document(rule)


def test_validation__rejects_a_bad_knative_annotation():
    service = render_cloud_run(CLOUD_RUN / "worker.yaml")
    service["spec"]["template"]["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] = "no"
    with pytest.raises(jsonschema.ValidationError):
        validate_document(service)


def test_cloud_run__unfilled_variable_is_an_error():
    with pytest.raises(KeyError):
        render_cloud_run(CLOUD_RUN / "web.yaml", {"PROJECT_ID": "p"})


def test_migrate_job__valid():
    job = render_cloud_run(ROOT / "k8s" / "jobs" / "migrate.yaml")
    validate_document(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][1:3] == ["manage.py", "migrate"]
    # A long migration may run; one waiting behind the live traffic's locks gives up, and retries.
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DB_STATEMENT_TIMEOUT_MS"] == "0"
    assert int(env["DB_LOCK_TIMEOUT_MS"]) > 0
    assert job["spec"]["backoffLimit"] >= 1


# --- What kustomize really applies (the base and the example overlay) ----------------------------

KUBECTL = shutil.which("kubectl")


def kustomize_build(directory: Path) -> list[dict]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# kubectl (with kustomize built in) comes with the machine image's Google Cloud CLI; Debian has
# no current kustomize. Everything else in this file validates without it.
@pytest.mark.skipif(KUBECTL is None, reason="kubectl (kustomize) is not installed on this machine")
@pytest.mark.parametrize("directory", [K8S_BASE, ROOT / "k8s" / "overlays" / "production"], ids=["base", "production"])
def test_kustomize_build__every_output_document_is_valid(directory):
    docs = kustomize_build(directory)
    assert len(docs) == len(list(base_documents()))
    for doc in docs:
        validate_document(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "omk"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "omk-hive"
    for doc in docs:
        if doc["kind"] == "Deployment":
            # Selectors are immutable: kustomize's labels must not have been added to them.
            assert "app.kubernetes.io/part-of" not in doc["spec"]["selector"]["matchLabels"]
            images = [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
            if directory != K8S_BASE:
                assert all(image.startswith("europe-west1-docker.pkg.dev/") for image in images), images
