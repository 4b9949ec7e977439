"""Graceful shutdown of real gunicorn instances: SIGTERM with requests in flight, the drain, the
report, a hung step, and `manage.py stop`."""

import concurrent.futures
import http.client
import os
import signal
import time
import urllib.parse

import pytest
import requests

from lifecycle.models import Instance, InstanceEvent, LifecycleReport
from tests.support.workers import manage, wait_for

# GKE with a 10 s grace period: our deadline is 9 s (10 % margin, at least 1 s).
GKE_10S = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "10"}
# The shutdown exports the outbox (the instance's own lifecycle events at least): to a Redis set,
# since no BigQuery answers here (with none, that step is cut off and reported, as it should be).
SINK = {"OUTBOX_SINK": "tests.support.sinks.RedisSetSink"}


def _instance_id(instance) -> str:
    return Instance.objects.get(pid=instance.pid, kind="web").id


def _in_flight(instance) -> float:
    """Requests the instance's workers are serving now (its /metrics, which counts no scrape)."""
    text = requests.get(instance.url + "/metrics", timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith("http_requests_in_flight ")]
    return float(line.split()[1])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__in_flight_requests_finish_and_report_is_stored(start_instance):
    # Eight threads per worker: however the kernel spreads the five slow requests over the two
    # workers, a probe never waits behind them for a thread (it would be served, but late).
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="2", GUNICORN_THREADS="8", **GKE_10S, **SINK)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=5)
    slow = [pool.submit(requests.get, instance.url + "/_test/slow?seconds=3", timeout=20) for _ in range(5)]
    time.sleep(0.7)  # all five are being served

    sent = time.monotonic()
    instance.signal(signal.SIGTERM)

    def ready_status() -> int:
        return requests.get(instance.url + "/ready", timeout=5).status_code

    # The master marks the drain as it handles the signal (well inside the 2 s delay, however
    # loaded the machine); from then on, readiness is 503 in every worker, and new connections
    # are served.
    wait_for(lambda: ready_status() == 503, timeout=1.5, interval=0.05, message="readiness 503 after SIGTERM")
    probes = [requests.get(instance.url + "/ready", timeout=5) for _ in range(4)]
    assert [p.status_code for p in probes] == [503] * 4
    assert probes[0].json()["checks"]["draining"].startswith("Unavailable")
    assert requests.get(instance.url + "/health", timeout=5).status_code == 200

    assert instance.process.wait(timeout=15) == 0
    took = time.monotonic() - sent
    responses = [f.result() for f in slow]
    assert [r.status_code for r in responses] == [200] * 5
    assert took < 9.0, f"exited after {took:.1f} s, past the 9 s deadline"

    report = LifecycleReport.objects.get(kind="shutdown")
    assert report.ok
    assert report.budget == 10
    assert report.duration < 9.0
    steps = {s["name"]: s for s in report.steps}
    assert list(steps)[:3] == ["drain", "drain_delay", "finish_requests"]
    assert steps["drain_delay"]["duration"] >= 1.9
    assert steps["finish_requests"]["count"] == 5
    assert steps["finish_requests"]["status"] == "ok"
    assert {"hand_back_jobs", "hand_back_messages", "export_outbox", "close_connections"} <= set(steps)
    instance_row = Instance.objects.get(id=report.instance_id)
    assert instance_row.state == "stopped"
    states = list(InstanceEvent.objects.filter(instance=instance_row).values_list("state", flat=True))
    assert states == ["starting", "ready", "draining", "stopped"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__an_idle_keep_alive_connection_outlives_the_balancers_and_ends_with_the_drain(start_instance):
    """A load balancer reuses its idle connections for 5 s (HAProxy's pool) to 600 s (Google's): we
    keep ours longer, so it is never we who close one while a request is on its way. A stopping
    worker does not wait out that keep-alive: it keeps an idle connection 2 s at most."""
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0", **GKE_10S, **SINK)
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(instance.url).netloc, timeout=10)
    connection.request("GET", "/health")
    assert connection.getresponse().read()
    kept = connection.sock
    time.sleep(6.5)  # past HAProxy's 5 s, with gunicorn's once-a-second sweep of idle connections
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200
    assert connection.sock is kept  # the same connection served it, not a new one

    sent = time.monotonic()
    instance.signal(signal.SIGTERM)
    assert instance.process.wait(timeout=15) == 0
    took = time.monotonic() - sent
    assert took < 6.0, f"exited {took:.1f} s after SIGTERM with an idle connection open"
    report = LifecycleReport.objects.get(kind="shutdown")
    assert report.ok, report.steps
    steps = {s["name"]: s for s in report.steps}
    assert steps["finish_requests"]["duration"] < 3.5, steps["finish_requests"]
    connection.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ctrl_c__same_graceful_sequence_as_sigterm(start_instance):
    """Ctrl-C in `make run`'s terminal: SIGINT to the master and its workers (one process group)."""
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0.5", **GKE_10S, **SINK)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    slow = [pool.submit(requests.get, instance.url + "/_test/slow?seconds=2", timeout=20) for _ in range(2)]
    time.sleep(0.5)  # both are being served

    os.killpg(instance.pid, signal.SIGINT)

    assert instance.process.wait(timeout=15) == 0
    assert [f.result().status_code for f in slow] == [200] * 2
    report = LifecycleReport.objects.get(kind="shutdown", instance__pid=instance.pid)
    assert report.ok
    steps = {s["name"]: s for s in report.steps}
    assert list(steps)[:3] == ["drain", "drain_delay", "finish_requests"]
    assert steps["finish_requests"]["count"] == 2
    assert Instance.objects.get(id=report.instance_id).state == "stopped"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__requests_queued_behind_busy_threads_are_served(start_instance):
    # One worker with two threads, six slow requests: four connections wait in gthread's queue
    # when SIGTERM arrives. The worker serves its queue before exiting (three rounds of 2 s, well
    # inside the 9 s deadline): no accepted connection is reset.
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0", WEB_CONCURRENCY="1", GUNICORN_THREADS="2", **GKE_10S)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=6)
    slow = [pool.submit(requests.get, instance.url + "/_test/slow?seconds=2", timeout=20) for _ in range(6)]
    time.sleep(0.5)  # all six accepted, two being served

    instance.signal(signal.SIGTERM)

    assert instance.process.wait(timeout=15) == 0
    assert [f.result().status_code for f in slow] == [200] * 6
    report = LifecycleReport.objects.get(kind="shutdown")
    steps = {s["name"]: s for s in report.steps}
    assert steps["finish_requests"]["status"] == "ok"
    assert steps["finish_requests"]["lost"] == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__request_cut_off_at_the_deadline_is_stored_and_counted_by_a_live_instance(start_instance):
    from prometheus_client import REGISTRY

    from lifecycle.recovery import recovery_run

    def lost() -> float:
        return REGISTRY.get_sample_value("pending_operations_lost_total", {"kind": "request"}) or 0.0

    # A 3 s grace period: the deadline (2 s) comes long before the 20 s request ends.
    instance = start_instance(
        wait_for="/ready", DRAIN_DELAY="0", KUBERNETES_SERVICE_HOST="10.0.0.1", TERMINATION_GRACE_PERIOD="3", **SINK
    )
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    doomed = pool.submit(requests.get, instance.url + "/_test/slow?seconds=20", timeout=30)
    time.sleep(0.7)
    instance.signal(signal.SIGTERM)
    instance.process.wait(timeout=10)
    with pytest.raises(requests.RequestException):
        doomed.result()

    report = LifecycleReport.objects.get(kind="shutdown")
    steps = {s["name"]: s for s in report.steps}
    assert steps["finish_requests"]["status"] == "timed out"
    assert steps["finish_requests"]["lost"] == 1
    assert steps["finish_requests"]["loses"] == "request"
    assert steps["hand_back_messages"]["flushes"] == "message"
    # The instance is gone with whatever it counted; a live one counts the stored report, once.
    before = lost()
    recovery_run(instance_id=None)
    recovery_run(instance_id=None)
    assert lost() == before + 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__without_drain_delay_new_connections_are_refused(start_instance):
    """The control for the test above: gunicorn's own stop closes the listener at once."""
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0", **GKE_10S)
    slow = concurrent.futures.ThreadPoolExecutor(1).submit(
        requests.get, instance.url + "/_test/slow?seconds=2", timeout=20
    )
    time.sleep(0.5)
    instance.signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(instance.url + "/health", timeout=5)
    assert slow.result().status_code == 200
    assert instance.process.wait(timeout=15) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__hung_step_is_cut_off_before_the_budget(start_instance):
    steps = "tests.support.steps.HangingStep,lifecycle.shutdown.CloseConnections"
    instance = start_instance(
        wait_for="/ready",
        DRAIN_DELAY="0",
        LIFECYCLE_SHUTDOWN_STEPS=steps,
        KUBERNETES_SERVICE_HOST="10.0.0.1",
        TERMINATION_GRACE_PERIOD="5",
    )
    sent = time.monotonic()
    instance.signal(signal.SIGTERM)
    instance.process.wait(timeout=10)
    took = time.monotonic() - sent
    assert took < 5.0, f"exited after {took:.1f} s: the platform would have SIGKILLed it"

    report = LifecycleReport.objects.get(kind="shutdown")
    assert not report.ok
    statuses = {s["name"]: s["status"] for s in report.steps}
    assert statuses["hanging"] == "timed out"
    assert statuses["close_connections"] == "ok"
    assert report.duration < 5.0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stop_command__prints_the_report_and_exits_0(start_instance, service_env):
    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0", **SINK)
    # In flight when the shutdown begins, however long `manage.py stop` takes to start (a second
    # or two of CPU, far more on a loaded machine): its 2 s begin with the drain.
    slow = concurrent.futures.ThreadPoolExecutor(1).submit(
        requests.get, instance.url + "/_test/slow?seconds=2&after=draining", timeout=60
    )
    wait_for(lambda: _in_flight(instance) == 1, timeout=20, message="the slow request in flight")

    result = manage({**service_env, "DRAIN_DELAY": "0"}, "stop")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Stopping web instance web-")
    assert f"(pid {instance.pid})" in lines[0]
    assert lines[1] == "Flushing pending operations:"
    assert lines[2].startswith("  Draining (readiness 503) ...")
    assert " ok " in lines[2]
    assert lines[3].startswith("  Finishing in-flight requests (1) ...")
    assert " ok " in lines[3]
    # The four questions an operator checks a shutdown for, in this order, then what was lost.
    headings = [line for line in lines if not line.startswith(" ") and line.endswith(":")]
    assert headings == [
        "Flushing pending operations:",
        "Persisting active sessions:",
        "Flushing logs:",
        "Closing connections:",
    ]
    assert any(line.startswith("  Closing connections ...") for line in lines)
    assert lines[-2] == "Lost: 0"
    assert lines[-1].startswith("Stopped in ")
    assert lines[-1].endswith("of a 30 s budget; nothing left in memory.")
    assert slow.result().status_code == 200
    assert instance.process.wait(timeout=5) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stop_command__failed_step_exits_1_and_nothing_to_stop_exits_2(start_instance, service_env):
    start_instance(
        wait_for="/ready",
        DRAIN_DELAY="0",
        LIFECYCLE_SHUTDOWN_STEPS="tests.support.steps.HangingStep",
        KUBERNETES_SERVICE_HOST="10.0.0.1",
        TERMINATION_GRACE_PERIOD="3",
    )
    env = {**service_env, "KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "3"}

    result = manage(env, "stop")

    assert result.returncode == 1, result.stdout + result.stderr
    hung = next(line for line in result.stdout.splitlines() if line.strip().startswith("Hanging forever"))
    assert "timed out" in hung
    assert "NOT clean" in result.stdout.splitlines()[-1]

    nothing = manage(env, "stop")
    assert nothing.returncode == 2
    assert "No running instance" in nothing.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_drain_command__readiness_503_before_sigterm(start_instance, service_env):
    instance = start_instance(wait_for="/ready")
    result = manage({**service_env, "DRAIN_DELAY": "0"}, "drain")
    assert result.returncode == 0, result.stderr
    assert requests.get(instance.url + "/ready", timeout=5).status_code == 503
    assert requests.get(instance.url + "/health", timeout=5).status_code == 200
    assert Instance.objects.get(pid=instance.pid).state == "draining"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_drain_command__readiness_503_before_django_is_set_up(start_instance, service_env):
    """The flag comes before Django's setup (seconds on a loaded node): settings that cannot even
    load (production's without SECRET_KEY) fail the command, and the instance drains all the same."""
    instance = start_instance(wait_for="/ready")
    other = start_instance(wait_for="/ready")
    # Asking for help (or mistyping an option) drains nothing.
    assert manage(service_env, "drain", "--help").returncode == 0
    assert manage(service_env, "drain", "--no-wiat").returncode != 0
    assert requests.get(instance.url + "/ready", timeout=5).status_code == 200
    broken = {**service_env, "DJANGO_SETTINGS_MODULE": "settings.production", "SECRET_KEY": ""}
    result = manage(broken, "drain", "--no-wait", "--pid", str(instance.pid))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert requests.get(instance.url + "/ready", timeout=5).status_code == 503
    # --pid is read before the setup too.
    assert requests.get(other.url + "/ready", timeout=5).status_code == 200


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm__outbox_is_exported_by_the_shutdown(start_instance):
    from core.redis import redis_client
    from lifecycle.outbox.models import OutboxEvent
    from lifecycle.outbox.services import record_event
    from tests.support.sinks import SINK_KEY

    instance = start_instance(wait_for="/ready", DRAIN_DELAY="0", **SINK)
    ids = {str(record_event(kind="bee_decision", payload={"n": n})) for n in range(3)}
    # The instance's own state changes so far (registered, ready) are events too.
    pending = set(OutboxEvent.objects.filter(exported_at__isnull=True).values_list("id", flat=True))
    assert len(pending) == 5

    instance.signal(signal.SIGTERM)
    assert instance.process.wait(timeout=15) == 0

    exported = {member.decode() for member in redis_client().smembers(SINK_KEY)}
    assert exported == {str(i) for i in pending}
    assert ids <= exported
    assert not OutboxEvent.objects.filter(id__in=pending, exported_at__isnull=True).exists()
    steps = {s["name"]: s for s in LifecycleReport.objects.get(kind="shutdown").steps}
    assert steps["export_outbox"]["status"] == "ok"
    assert steps["export_outbox"]["count"] == 5
    assert steps["hand_back_messages"]["status"] == "ok"
