"""Instance registry: registration, heartbeats, lost instances, `manage.py instances`, recovery."""

import datetime as dt
import time

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client import REGISTRY

from core.redis import redis_client
from lifecycle.models import Instance, InstanceEvent, InstanceState, LifecycleReport
from lifecycle.outbox.models import OutboxEvent
from lifecycle.recovery import recovery_run
from lifecycle.registry import heartbeat_key
from lifecycle.services import (
    instance_register,
    instance_set_state,
    instances_mark_lost,
    instances_prune,
    report_record,
)
from lifecycle.steps import Report, StepResult, StepStatus


def _age(instance_id: str, seconds: float) -> None:
    Instance.objects.filter(id=instance_id).update(state_changed_at=timezone.now() - dt.timedelta(seconds=seconds))


@pytest.mark.django_db
def test_instance_register__row_event_and_heartbeat():
    instance = instance_register(instance_id="web-a", kind="web", pid=123)
    assert instance.state == InstanceState.STARTING
    assert instance.pid == 123
    assert redis_client().get(heartbeat_key("web-a")) == b"starting"
    assert 0 < redis_client().pttl(heartbeat_key("web-a")) <= 15_000
    assert list(InstanceEvent.objects.values_list("state", flat=True)) == ["starting"]


@pytest.mark.django_db
def test_instance_register__again_overwrites_the_row_in_one_statement(django_assert_num_queries):
    instance_register(instance_id="web-b", kind="web", pid=1)
    instance_set_state(instance_id="web-b", state=InstanceState.READY)
    # The upsert, the event and the outbox row; inside the test's transaction, one savepoint pair.
    with django_assert_num_queries(5):
        instance_register(instance_id="web-b", kind="worker", pid=2)
    row = Instance.objects.get(id="web-b")
    assert (row.kind, row.pid, row.state) == ("worker", 2, InstanceState.STARTING)
    assert Instance.objects.count() == 1


@pytest.mark.django_db
def test_instances_mark_lost__only_expired_heartbeats_without_clean_stop():
    instance_register(instance_id="alive", kind="web")
    instance_register(instance_id="dead", kind="worker")
    instance_register(instance_id="stopped", kind="web")
    instance_set_state(instance_id="stopped", state=InstanceState.STOPPED)
    for instance_id in ("alive", "dead", "stopped"):
        _age(instance_id, 60)
    redis_client().delete(heartbeat_key("dead"), heartbeat_key("stopped"))

    assert instances_mark_lost() == ["dead"]
    assert Instance.objects.get(id="dead").state == InstanceState.LOST
    assert Instance.objects.get(id="alive").state == InstanceState.STARTING
    assert Instance.objects.get(id="stopped").state == InstanceState.STOPPED
    assert InstanceEvent.objects.filter(instance_id="dead", state=InstanceState.LOST).count() == 1
    # Each state change is also an analytics event, written in the same transaction.
    lost_events = OutboxEvent.objects.filter(kind="lifecycle_event", payload__instance_id="dead", payload__state="lost")
    assert lost_events.count() == 1
    # A second pass finds nothing more: each loss is recorded once.
    assert instances_mark_lost() == []


@pytest.mark.django_db
def test_instances_mark_lost__recent_state_change_is_not_lost_yet():
    instance_register(instance_id="young", kind="web")
    redis_client().delete(heartbeat_key("young"))
    assert instances_mark_lost() == []


def _gone(instance_id: str, *, state: str, days_ago: float, counted: bool | None = None) -> None:
    """An instance in `state` since `days_ago`, with an event and, unless `counted` is None, a
    shutdown report counted into the metrics or not."""
    instance_register(instance_id=instance_id, kind="web")
    instance_set_state(instance_id=instance_id, state=state)
    Instance.objects.filter(pk=instance_id).update(state_changed_at=timezone.now() - dt.timedelta(days=days_ago))
    if counted is not None:
        report_record(instance_id=instance_id, report=Report(kind="shutdown", started_at=time.time(), steps=[]))
        LifecycleReport.objects.filter(instance_id=instance_id).update(counted_at=timezone.now() if counted else None)


@pytest.mark.django_db
def test_instances_prune__stopped_or_lost_long_ago_go_with_their_events_and_reports():
    _gone("old-stopped", state=InstanceState.STOPPED, days_ago=31, counted=True)
    _gone("old-lost", state=InstanceState.LOST, days_ago=40)
    _gone("old-uncounted", state=InstanceState.STOPPED, days_ago=31, counted=False)
    _gone("recent-stopped", state=InstanceState.STOPPED, days_ago=29, counted=True)
    # Still live by its row (a recovery pass has yet to find it lost): never pruned.
    _gone("old-ready", state=InstanceState.READY, days_ago=31)

    assert instances_prune(older_than=dt.timedelta(days=30)) == 2

    assert set(Instance.objects.values_list("id", flat=True)) == {"old-uncounted", "recent-stopped", "old-ready"}
    assert not InstanceEvent.objects.filter(instance_id__in=["old-stopped", "old-lost"]).exists()
    assert not LifecycleReport.objects.filter(instance_id="old-stopped").exists()
    # Once a live instance has counted its shutdown report, it goes too.
    LifecycleReport.objects.filter(instance_id="old-uncounted").update(counted_at=timezone.now())
    assert instances_prune(older_than=dt.timedelta(days=30)) == 1
    assert instances_prune(older_than=dt.timedelta(days=30)) == 0


def test_instances_prune__the_worker_runs_it_daily():
    from procrastinate.contrib.django import app

    import lifecycle.tasks  # noqa: F401  (procrastinate autodiscovers it in the worker)

    periodic = {task.periodic_id: task for task in app.periodic_registry.periodic_tasks.values()}
    assert periodic["lifecycle-instances-prune"].task.name == "lifecycle.instances_prune"


# transaction=True: the steps run in threads of their own, with their own connections.
@pytest.mark.django_db(transaction=True)
def test_recovery_run__report_with_each_step_is_stored():
    instance_register(instance_id="web-r", kind="web")
    instance_register(instance_id="gone", kind="web")
    _age("gone", 60)
    redis_client().delete(heartbeat_key("gone"))

    report = recovery_run(instance_id="web-r")

    stored = LifecycleReport.objects.get(instance_id="web-r", kind="recovery")
    steps = {s["name"]: s for s in stored.steps}
    assert steps["mark_lost_instances"]["count"] == 1
    assert steps["mark_lost_instances"]["status"] == "ok"
    assert steps["retry_stalled_jobs"]["status"] == "ok"
    assert set(steps) == {
        "mark_lost_instances",
        "retry_stalled_jobs",
        "redeliver_messages",
        "count_sessions",
        "count_shutdowns",
    }
    # The queues and sessions steps are wired in, not skipped.
    assert steps["redeliver_messages"]["status"] == "ok"
    assert steps["count_sessions"]["status"] == "ok"
    assert stored.ok == report.ok


def _shutdown_report(instance_id: str, *, kind: str, ok: bool, duration: float, steps: list[StepResult]) -> None:
    instance_register(instance_id=instance_id, kind=kind)
    report = Report(kind="shutdown", started_at=time.time(), budget=10.0, steps=steps, duration=duration)
    report_record(instance_id=instance_id, report=report)
    assert report.ok is ok


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.django_db(transaction=True)
def test_count_shutdowns__stored_reports_reach_a_live_process_metrics_once():
    """A stopping instance's own samples vanish with it: a live instance counts its stored report."""
    before = {
        "clean": _sample("instance_shutdown_total", {"kind": "web", "outcome": "clean"}),
        "unclean": _sample("instance_shutdown_total", {"kind": "worker", "outcome": "unclean"}),
        "durations": _sample("instance_shutdown_duration_seconds_count"),
        "slow": _sample("instance_shutdown_duration_seconds_bucket", {"le": "5.0"}),
        "jobs": _sample("pending_operations_flushed_total", {"kind": "job"}),
        "messages": _sample("pending_operations_flushed_total", {"kind": "message"}),
        "lost": _sample("pending_operations_lost_total", {"kind": "request"}),
        "lost_events": _sample("pending_operations_lost_total", {"kind": "outbox_event"}),
    }
    _shutdown_report(
        "web-s",
        kind="web",
        ok=True,
        duration=1.5,
        steps=[StepResult("hand_back_messages", "m", StepStatus.OK, 3, 0.1, flushes="message")],
    )
    _shutdown_report(
        "worker-s",
        kind="worker",
        ok=False,
        duration=9.0,
        steps=[
            StepResult("hand_back_jobs", "j", StepStatus.OK, 2, 0.1, flushes="job"),
            StepResult("finish_requests", "r", StepStatus.TIMED_OUT, 5, 8.0, "cut off", lost=4, loses="request"),
            StepResult("export", "e", StepStatus.TIMED_OUT, 0, 1.0, "cut off", lost=2, loses="outbox_event"),
        ],
    )

    first = recovery_run(instance_id="web-live", record=False)
    again = recovery_run(instance_id="web-live", record=False)

    assert {s.name: s.count for s in first.steps}["count_shutdowns"] == 2
    assert {s.name: s.count for s in again.steps}["count_shutdowns"] == 0
    assert _sample("instance_shutdown_total", {"kind": "web", "outcome": "clean"}) == before["clean"] + 1
    assert _sample("instance_shutdown_total", {"kind": "worker", "outcome": "unclean"}) == before["unclean"] + 1
    assert _sample("instance_shutdown_duration_seconds_count") == before["durations"] + 2
    assert _sample("instance_shutdown_duration_seconds_bucket", {"le": "5.0"}) == before["slow"] + 1
    assert _sample("pending_operations_flushed_total", {"kind": "job"}) == before["jobs"] + 2
    assert _sample("pending_operations_flushed_total", {"kind": "message"}) == before["messages"] + 3
    assert _sample("pending_operations_lost_total", {"kind": "request"}) == before["lost"] + 4
    assert _sample("pending_operations_lost_total", {"kind": "outbox_event"}) == before["lost_events"] + 2
    assert not LifecycleReport.objects.filter(kind="shutdown", counted_at__isnull=True).exists()


@pytest.mark.django_db
def test_instances_command__lists_live_and_gone(capsys):
    instance_register(instance_id="web-live", kind="web", pid=42)
    instance_register(instance_id="worker-gone", kind="worker")
    instance_set_state(instance_id="worker-gone", state=InstanceState.LOST)
    redis_client().delete(heartbeat_key("worker-gone"))

    call_command("instances")

    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["ID", "KIND", "STATE"]
    live = next(line for line in out if line.startswith("web-live"))
    assert live.split()[1:3] == ["web", "starting"]
    assert "s left" in live
    gone = next(line for line in out if line.startswith("worker-gone"))
    assert gone.split()[1:3] == ["worker", "lost"]
    assert gone.rstrip().endswith("-")
