"""The checker's attribution of failed requests, on synthetic timelines (no processes)."""

import itertools

from chaos.checker import PLANNED_SCALE_IN, UNEXPLAINED, classify
from chaos.recorder import Attempt
from chaos.scaler import InstanceRecord, Schedule


def _attempt(t0: float, t1: float, server: str | None = "s0", status: int | None = 502) -> Attempt:
    return Attempt(id="op1.1", t0=t0, t1=t1, status=status, server=server)


def test_classify__failure_on_a_draining_instance_is_a_planned_scale_in_violation():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, drain_start=10.0)]
    assert classify(_attempt(10.5, 10.6), records, []) == PLANNED_SCALE_IN


def test_classify__failure_on_a_killed_instance_is_explained_by_the_kill():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, killed=10.0)]
    assert classify(_attempt(9.0, 10.1), records, []) == "sigkill"


def test_classify__slot_reused_after_a_kill_belongs_to_the_new_instance():
    records = [
        InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, killed=5.0),
        InstanceRecord(name="web2", slot=0, port=1, started=20.0, ready=21.0, drain_start=30.0),
    ]
    assert classify(_attempt(30.5, 30.6), records, []) == PLANNED_SCALE_IN


def test_classify__failure_during_a_dependency_restart_is_explained_by_it():
    windows = [{"kind": "redis_restart", "start": 10.0, "end": 11.0, "settled": 12.0}]
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0)]
    assert classify(_attempt(11.5, 11.6, status=503), records, windows) == "redis_restart"


def test_classify__failure_with_nothing_going_on_is_unexplained():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0)]
    windows = [{"kind": "postgres_restart", "start": 50.0, "end": 52.0, "settled": 53.0}]
    assert classify(_attempt(20.0, 20.1), records, windows) == UNEXPLAINED


def test_classify__paused_instance_explains_failures_until_shortly_after_resume():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, paused=[(10.0, 15.0)])]
    assert classify(_attempt(12.0, 15.2), records, []) == "paused_instance"
    assert classify(_attempt(30.0, 30.1), records, []) == UNEXPLAINED


def test_schedule__same_seed_same_plan_and_every_other_step_scales_in():
    faults = dict.fromkeys(("kill", "kill_worker", "pause", "redis_restart", "postgres_restart"), True)
    a = Schedule.build(seed=3, duration=600, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    b = Schedule.build(seed=3, duration=600, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    assert a == b
    levels = [level for _, level in a.levels]
    scale_ins = sum(1 for before, after in itertools.pairwise(levels) if after < before)
    assert scale_ins >= 20
    assert len(a.web_kills) >= 20
    assert len(a.redis_restarts) == 1
    assert len(a.postgres_restarts) == 1


def test_schedule__faults_can_be_turned_off():
    faults = dict.fromkeys(("kill", "kill_worker", "pause", "redis_restart", "postgres_restart"), False)
    plan = Schedule.build(seed=3, duration=60, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    assert plan.web_kills == plan.worker_kills == plan.pauses == plan.redis_restarts == plan.postgres_restarts == []


def test_classify__silent_close_with_no_server_is_explained_by_a_kill_at_that_moment():
    records = [
        InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, killed=10.0),
        InstanceRecord(name="web2", slot=1, port=2, started=0.0, ready=1.0, drain_start=10.0, exited=13.0),
    ]
    assert classify(_attempt(9.9, 10.05, server=None, status=None), records, []) == "sigkill"
    assert classify(_attempt(40.0, 40.1, server="<NOSRV>", status=503), records, []) == UNEXPLAINED


def test_classify__silent_close_while_an_instance_drains_is_a_planned_scale_in_violation():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, drain_start=10.0, exited=13.0)]
    assert classify(_attempt(12.0, 12.5, server=None, status=None), records, []) == PLANNED_SCALE_IN
