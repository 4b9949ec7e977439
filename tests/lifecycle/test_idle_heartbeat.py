"""Request-based CPU: an instance gets no CPU between requests (Cloud Run with cpu-throttling).

Its processes are frozen here with SIGSTOP, which is what the throttling amounts to for its
heartbeat thread. An idle instance, frozen past the heartbeat TTL, is not counted lost (its idle
beat lasts IDLE_HEARTBEAT_TTL); the same instance without that setting is; and an instance that
dies while it serves a request is still found lost within the TTL."""

import contextlib
import os
import signal
import threading
import time

import pytest
import requests

from core.redis import redis_client
from lifecycle.models import Instance
from lifecycle.registry import heartbeat_write
from lifecycle.services import instances_mark_lost
from tests.support.workers import wait_for

FAST = {"INSTANCE_HEARTBEAT_INTERVAL": "0.5", "INSTANCE_HEARTBEAT_TTL": "1.5", "WEB_CONCURRENCY": "1"}
IDLE = {"IDLE_HEARTBEAT_TTL": "60"}


def _instance_id(instance) -> str:
    row = wait_for(
        lambda: Instance.objects.filter(pid=instance.pid, kind="web", state="ready").first(),
        timeout=20,
        message="instance ready",
    )
    return row.id


@contextlib.contextmanager
def frozen(*instances):
    """No CPU for the instances' processes (master and workers: one process group each)."""
    for instance in instances:
        os.killpg(instance.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for instance in instances:
            os.killpg(instance.pid, signal.SIGCONT)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_idle_instance__without_cpu_between_requests_is_not_lost(start_instance):
    idle = start_instance(wait_for="/ready", **FAST, **IDLE)
    always_on = start_instance(wait_for="/ready", **FAST)
    idle_id, always_on_id = _instance_id(idle), _instance_id(always_on)
    for instance in (idle, always_on):
        assert requests.get(instance.url + "/health", timeout=5).status_code == 200
    time.sleep(0.6)  # a beat of each master's thread after its last request

    with frozen(idle, always_on):
        time.sleep(2.5)  # past the 1.5 s TTL
        lost = instances_mark_lost(ttl=1.5)
    assert always_on_id in lost, "without the idle lease a frozen instance expires (the control)"
    assert idle_id not in lost
    assert Instance.objects.get(pk=idle_id).state == "ready"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_idle_lease__an_instance_that_dies_serving_is_still_found_lost(start_instance):
    busy = start_instance(wait_for="/ready", **FAST, **IDLE)
    busy_id = _instance_id(busy)

    def in_flight() -> None:
        with contextlib.suppress(requests.RequestException):  # the instance dies under it
            requests.get(busy.url + "/_test/slow?seconds=20", timeout=30)

    threading.Thread(target=in_flight, daemon=True).start()
    time.sleep(1.2)  # the master beats while the request runs: the short TTL again
    busy.kill()
    time.sleep(2.0)
    assert busy_id in instances_mark_lost(ttl=1.5)


def test_heartbeat_write__a_beat_taken_before_a_later_one_never_replaces_it():
    client = redis_client()
    instance_id = "web-test-generation"
    # The idle beat written as request 8 ended; then the master's beat taken while 8 still ran.
    assert heartbeat_write(client, instance_id=instance_id, state="ready", ttl=60, generation=8)
    assert not heartbeat_write(client, instance_id=instance_id, state="ready", ttl=1.5, generation=7)
    assert client.pttl(f"omk:lifecycle:instance:{instance_id}") > 50_000
    # A beat taken later (a new request running) does replace it.
    assert heartbeat_write(client, instance_id=instance_id, state="ready", ttl=1.5, generation=8)
    assert client.pttl(f"omk:lifecycle:instance:{instance_id}") <= 1500
