"""What the Cloud Run deployment costs at zero traffic, computed from the manifests themselves.

A Cloud Run service bills CPU for the instances it keeps: with instance-based billing
(`cpu-throttling: "false"`) for each instance's whole life, with request-based billing
(`"true"`) only while a request is in flight, plus its minimum instances, which it keeps
whatever the traffic (at a reduced idle rate with request-based billing, still not zero: counted
here at the full rate, an upper bound). With no request at all, a service with `minScale: "0"`
keeps no instance, and so bills no vCPU-second. What does run at zero traffic is the scheduled
drain (a Cloud Run job, billed for each run), counted against the jobs' free tier.
"""

import copy
import re

from tests.deploy.support import (
    CLOUD_RUN,
    cloud_run_drain_job,
    cloud_run_drain_schedule,
    cloud_run_services,
    render_cloud_run,
)

# The month: 30 days.
SECONDS_PER_MONTH = 30 * 24 * 3600
# Free tier per month and billing account (cloud.google.com/run/pricing, as read on 2026-12-02):
# request-based services 180,000 vCPU-s; instance-based services and jobs 240,000 vCPU-s.
FREE_VCPU_SECONDS_REQUEST_BASED = 180_000
FREE_VCPU_SECONDS_JOBS = 240_000
# An idle drain (nothing to do: start, register, one round, stop) measured 5.8-6.4 s wall (1.9 s
# CPU) on the 2-core test machine at load 4.3, 2026-12-02, almost all of it Django's start; 10 s
# covers the container's start as Cloud Run bills it.
IDLE_DRAIN_SECONDS = 10


def cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def vcpu_seconds_at_zero_traffic(service: dict) -> float:
    """vCPU-seconds a month the service bills with no request at all: its minimum instances,
    each with all its containers' CPU, the whole month."""
    template = service["spec"]["template"]
    min_scale = int(template["metadata"]["annotations"].get("autoscaling.knative.dev/minScale", "0"))
    cpus = sum(cpu(c["resources"]["limits"]["cpu"]) for c in template["spec"]["containers"])
    return min_scale * cpus * SECONDS_PER_MONTH


def drain_runs_per_month() -> int:
    (minutes,) = re.fullmatch(r"\*/(\d+) \* \* \* \*", cloud_run_drain_schedule()["schedule"]).groups()
    return SECONDS_PER_MONTH // (int(minutes) * 60)


def test_cloud_run_services__cost_no_vcpu_second_at_zero_traffic():
    costs = {name: vcpu_seconds_at_zero_traffic(service) for name, service in cloud_run_services().items()}
    assert set(costs) == {"web.yaml", "worker.yaml"}
    assert costs == {"web.yaml": 0, "worker.yaml": 0}


def test_zero_traffic_cost__counts_the_old_always_on_worker():
    """The worker as it was (at least one instance, CPU always allocated, a gunicorn and a worker
    sidecar at 1 vCPU each) costs 2 x 2,592,000 vCPU-seconds a month before any request."""
    worker = copy.deepcopy(render_cloud_run(CLOUD_RUN / "worker.yaml"))
    template = worker["spec"]["template"]
    template["metadata"]["annotations"]["autoscaling.knative.dev/minScale"] = "1"
    template["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] = "false"
    sidecar = copy.deepcopy(template["spec"]["containers"][0])
    sidecar.update(name="worker", command=["python", "manage.py", "worker"])
    template["spec"]["containers"].append(sidecar)
    assert vcpu_seconds_at_zero_traffic(worker) == 5_184_000
    assert vcpu_seconds_at_zero_traffic(worker) / FREE_VCPU_SECONDS_REQUEST_BASED > 28


def test_scheduled_drain__fits_in_the_jobs_free_tier_at_zero_traffic():
    task = cloud_run_drain_job()["spec"]["template"]["spec"]["template"]["spec"]
    cpus = sum(cpu(c["resources"]["limits"]["cpu"]) for c in task["containers"])
    runs = drain_runs_per_month()
    assert runs == 8640  # every 5 minutes
    monthly = runs * IDLE_DRAIN_SECONDS * cpus
    assert monthly == 86_400
    assert monthly < FREE_VCPU_SECONDS_JOBS / 2
