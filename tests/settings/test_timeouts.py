"""The explicit bounds on dependency waits, proven on a path that silently drops packets: a real
gunicorn instance in a network namespace of its own (chaos/netns.py), its PostgreSQL or Redis path
cut by an iptables DROP rule inside that namespace (no RST, no ICMP: what a broken network does).
Without the bounds the request would wait for TCP's retransmissions, minutes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from chaos import netns
from chaos.topology import wait_until
from tests.support.instances import NamespacedInstance

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# One PostgreSQL wait on a dropped path: the pooled connection's check hangs until tcp_user_timeout
# breaks it, then the pool waits for a new one (its connect_timeout runs inside the pool timeout).
POSTGRES_BOUND = settings.DB_TCP_USER_TIMEOUT_MS / 1000 + settings.DATABASES["default"]["OPTIONS"]["pool"]["timeout"]
# Redis: one call gives up after one socket (or connect) timeout, a timeout is not retried; the
# API throttle lets a request through when Redis is unreachable, so the request's next Redis call
# is the one that answers 503: two timeouts, and a second of backoffs and reconnections.
REDIS_BOUND = 2 * max(settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT) + 1
SLACK = 2.0  # a loaded 2-core machine: gunicorn's own work around the wait


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def namespace(service_env, tmp_path: Path) -> Iterator[netns.Namespace]:
    missing = netns.available()
    if missing:
        pytest.fail(f"network namespaces unavailable: {missing}")
    targets = {"postgres": _port(service_env["DATABASE_URL"]), "redis": _port(service_env["REDIS_URL"])}
    network = netns.Network(1, targets, tmp_path / "net").create()
    try:
        yield network.namespaces[0]
    finally:
        network.remove()


@pytest.fixture
def instance_in_namespace(namespace, service_env, tmp_path: Path) -> Iterator:
    started: list[NamespacedInstance] = []

    def start(**env: str) -> NamespacedInstance:
        instance = NamespacedInstance(namespace, {**service_env, **env}, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(instance)
        return instance.start(wait_for="/ready", timeout=30)

    yield start
    for instance in started:
        instance.kill()


def _timed(method: str, url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url, timeout=120, **kwargs)
    return response, time.monotonic() - started


def test_request__postgresql_path_dropping_packets_is_503_within_the_bound(namespace, instance_in_namespace, api_token):
    # Several idle connections, each of which hangs its test until tcp_user_timeout once the path
    # drops: the request must not wait for them one after another.
    instance = instance_in_namespace(DB_POOL_MIN_SIZE="4")
    headers = {"Authorization": f"Bearer {api_token}"}
    assert requests.get(instance.url + "/api/proposals/", headers=headers, timeout=10).status_code == 200

    namespace.drop_dependency("postgres")
    response, took = _timed("GET", instance.url + "/api/proposals/", headers=headers)
    assert response.status_code == 503, response.text[:500]
    assert response.json()["dependency"] == "database"
    assert response.headers["Retry-After"]
    assert took < POSTGRES_BOUND + SLACK, f"answered after {took:.1f} s"
    print(f"dropped PostgreSQL path: 503 after {took:.1f} s")

    ready, took = _timed("GET", instance.url + "/ready")
    assert ready.status_code == 503
    assert "PostgreSQL is unavailable" in ready.json()["checks"]["database"]
    assert took < POSTGRES_BOUND + SLACK, f"readiness answered after {took:.1f} s"

    namespace.heal()
    assert wait_until(
        lambda: requests.get(instance.url + "/api/proposals/", headers=headers, timeout=15).status_code == 200,
        timeout=20,
    )


def test_request__redis_path_dropping_packets_is_503_within_the_bound(namespace, instance_in_namespace, api_token):
    instance = instance_in_namespace()
    headers = {"Authorization": f"Bearer {api_token}", "Idempotency-Key": "board-dropped"}
    namespace.drop_dependency("redis")
    response, took = _timed("POST", instance.url + "/api/board/", json={"body": "hello"}, headers=headers)
    assert response.status_code == 503, response.text[:500]
    assert response.json()["dependency"] == "redis"
    assert took < REDIS_BOUND + SLACK, f"answered after {took:.1f} s"
    print(f"dropped Redis path: 503 after {took:.1f} s")

    namespace.heal()

    def retried() -> bool:
        url = instance.url + "/api/board/"
        return requests.post(url, json={"body": "hello"}, headers=headers, timeout=15).status_code == 201

    assert wait_until(retried, timeout=20)


def test_sigterm__while_partitioned_exits_within_budget_naming_the_steps_that_timed_out(
    namespace, instance_in_namespace, tmp_path
):
    # GKE with a 10 s grace period: the sequence's own deadline is 9 s.
    instance = instance_in_namespace(DRAIN_DELAY="0", KUBERNETES_SERVICE_HOST="10.0.0.1", TERMINATION_GRACE_PERIOD="10")
    namespace.drop_dependency("postgres")
    namespace.drop_dependency("redis")
    sent = time.monotonic()
    instance.signal(signal.SIGTERM)
    instance.process.wait(timeout=20)
    took = time.monotonic() - sent
    assert took < 10.0, f"exited after {took:.1f} s: the platform would have SIGKILLed it"

    # PostgreSQL is out of reach, so the report is read where the sequence writes it after each step.
    (report_path,) = (tmp_path / "run").glob("gunicorn-*.report.json")
    report = json.loads(report_path.read_text())
    assert report["done"] is True
    assert not report["ok"]
    assert report["stored"] is False
    # The steps that need PostgreSQL or Redis are cut off by the bounds and named with their cause;
    # the ones that need neither still ran.
    cut = {step["name"]: step["detail"] for step in report["steps"] if step["status"] in ("timed out", "failed")}
    assert {"export_outbox", "persist_sessions"} <= set(cut), report["steps"]
    assert all(detail for detail in cut.values()), cut
    assert {step["name"]: step["status"] for step in report["steps"]}["close_connections"] == "ok"
    assert report["duration"] < 10.0


def test_sigterm__cloud_run_budget_with_300_ms_added_to_both_dependencies_finishes_in_time(
    start_instance, service_env, api_token, tmp_path
):
    from chaos.netproxy import TcpProxy
    from lifecycle.models import LifecycleReport

    # 150 ms each way: every round trip to PostgreSQL and to Redis takes 300 ms longer.
    proxies = {name: TcpProxy(_port(service_env[name])).start() for name in ("DATABASE_URL", "REDIS_URL")}
    try:
        env = {
            name: service_env[name].replace(f":{_port(service_env[name])}", f":{proxy.port}")
            for name, proxy in proxies.items()
        }
        # The outbox goes to a Redis set (no BigQuery here; without one that step is cut off).
        instance = start_instance(
            wait_for="/ready", K_SERVICE="omk", OUTBOX_SINK="tests.support.sinks.RedisSetSink", **env
        )
        # From here on (the subject is the shutdown; a start-up at this latency takes ~15 s).
        for proxy in proxies.values():
            proxy.set_latency(0.15)
        headers = {"Authorization": f"Bearer {api_token}"}
        slow_started = time.monotonic()
        assert requests.get(instance.url + "/api/proposals/", headers=headers, timeout=30).status_code == 200
        assert time.monotonic() - slow_started > 0.3  # the latency is really on the path
        sent = time.monotonic()
        instance.signal(signal.SIGTERM)
        instance.process.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        for proxy in proxies.values():
            proxy.close()
    # Every step ran within the budget; the report is in the file whether or not its storing in
    # PostgreSQL (a few more round trips) still fitted before the deadline.
    (report_path,) = (tmp_path / "run").glob("gunicorn-*.report.json")
    report = json.loads(report_path.read_text())
    steps = [(step["name"], step["status"], round(step["duration"], 2)) for step in report["steps"]]
    # Cloud Run SIGKILLs 10 s after SIGTERM.
    assert took < 10.0, f"exited after {took:.1f} s: {steps}"
    assert report["done"]
    assert report["ok"], steps
    assert report["duration"] < 9.5
    # `stored` is the whole finish (report row, instance state) done before the deadline; cut off,
    # the row may or may not be in.
    assert not report["stored"] or LifecycleReport.objects.filter(kind="shutdown").exists()
