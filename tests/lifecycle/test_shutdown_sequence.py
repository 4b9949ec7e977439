"""ShutdownSequence in one process: the budget and deadlines, the order of the steps, the report
file after every step, the heartbeat, and the stored report."""

import json
import os
import time

import pytest

from lifecycle.models import Instance, InstanceEvent, LifecycleReport
from lifecycle.services import instance_register
from lifecycle.shutdown import ShutdownSequence, report_file
from lifecycle.steps import Step, StepStatus, time_after

# GKE with a 5 s grace period: our deadline is 4 s (a 1 s margin).
GKE_5S = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "5"}
events: list[tuple] = []


class First(Step):
    """A process's own first step: records the deadline it was given and the report file so far."""

    name = "first"
    label = "First ({count})"
    in_thread = False

    def run(self, *, deadline: float) -> int:
        events.append(("first", deadline, self.context.kind))
        self.context.running_job_ids = [7]
        return 2


class Configured(Step):
    """A configured step: sees what the first step left in the shared context."""

    name = "configured"
    label = "Configured"

    def run(self, *, deadline: float) -> int:
        events.append(("configured", deadline, list(self.context.running_job_ids)))
        return len(self.context.running_job_ids)


class FakeHeartbeat:
    def stop(self, *, clear: bool) -> None:
        events.append(("heartbeat", clear))


@pytest.fixture
def sequence_env(monkeypatch, settings, tmp_path):
    events.clear()
    for name, value in GKE_5S.items():
        monkeypatch.setenv(name, value)
    settings.OMK_RUN_DIR = str(tmp_path)
    settings.LIFECYCLE_SHUTDOWN_STEPS = [f"{__name__}.Configured"]
    settings.LIFECYCLE_REPORT_RESERVE = 0.5
    instance_register(instance_id="web-seq", kind="web", write_heartbeat=False)


@pytest.mark.django_db(transaction=True)
def test_sequence__deadline_from_the_drain_steps_in_order_and_report_stored(sequence_env, tmp_path):
    began = time.time() - 1.0  # a preStop drain began a second ago
    sequence = ShutdownSequence(
        process="gunicorn", instance_id="web-seq", kind="web", heartbeat=FakeHeartbeat(), began=began
    )
    assert sequence.began == began
    assert sequence.report.budget == 5
    assert sequence.platform.shutdown_deadline == 4.0
    assert 0.99 < sequence.elapsed() < 1.5
    # The deadline counts from the drain, not from now.
    assert abs(sequence.deadline - (time.monotonic() - sequence.elapsed() + 4.0)) < 0.01
    assert sequence.time_kept == time_after(1, 0.5, 4.0)

    report = sequence.run([First(sequence.context)])

    first, configured, heartbeat = events
    assert first[0] == "first"
    assert first[2] == "web"
    assert first[1] == pytest.approx(sequence.deadline - sequence.time_kept)
    # The configured step runs after, to the deadline less the reserve, on the same context.
    assert configured[0] == "configured"
    assert configured[1] <= sequence.deadline - 0.5 + 1e-6
    assert configured[2] == [7]
    assert heartbeat == ("heartbeat", True)
    assert [(s.name, s.label, s.status, s.count) for s in report.steps] == [
        ("first", "First (2)", StepStatus.OK, 2),
        ("configured", "Configured", StepStatus.OK, 1),
    ]
    assert report.ok
    assert 1.0 < report.duration < 2.0

    written = json.loads(report_file("gunicorn", os.getpid()).read_text())
    assert written["done"] is True
    assert written["instance_id"] == "web-seq"
    assert [s["name"] for s in written["steps"]] == ["first", "configured"]
    stored = LifecycleReport.objects.get(kind="shutdown", instance_id="web-seq")
    assert [s["name"] for s in stored.steps] == ["first", "configured"]
    assert Instance.objects.get(id="web-seq").state == "stopped"
    # drained (by default): the drain is recorded, at the time it began.
    draining = InstanceEvent.objects.get(instance_id="web-seq", state="draining")
    assert abs(draining.at.timestamp() - began) < 0.01


@pytest.mark.django_db(transaction=True)
def test_sequence__without_a_drain_the_budget_begins_now_and_none_is_recorded(sequence_env):
    sequence = ShutdownSequence(
        process="worker", instance_id="web-seq", kind="worker", heartbeat=None, drained=lambda: False
    )
    assert sequence.elapsed() < 0.1
    assert abs(sequence.began - time.time()) < 0.1

    sequence.run([])

    assert [e[0] for e in events] == ["configured"]
    assert json.loads(report_file("worker", os.getpid()).read_text())["done"] is True
    assert not InstanceEvent.objects.filter(instance_id="web-seq", state="draining").exists()
    assert Instance.objects.get(id="web-seq").state == "stopped"
