"""The checker's attribution of failed requests, on synthetic timelines (no processes)."""

import itertools

from chaos.checker import PLANNED_SCALE_IN, UNEXPLAINED, classify, fault_figures
from chaos.recorder import Attempt, Op
from chaos.scaler import InstanceRecord, Schedule

FAULTS = ("kill", "kill_worker", "pause", "redis_restart", "postgres_restart", "postgres_failover", "redis_failover")


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


def test_classify__a_503_naming_its_dependency_goes_to_that_dependencys_fault():
    windows = [
        {"kind": "redis_failover", "start": 10.0, "end": 13.0, "settled": 14.0},
        {"kind": "postgres_restart", "start": 14.0, "end": 16.0, "settled": 17.0},
    ]
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0)]
    database = Attempt(id="a", t0=14.5, t1=14.6, status=503, server="s0", dependency="database")
    redis = Attempt(id="b", t0=14.5, t1=14.6, status=503, server="s0", dependency="redis")
    assert classify(database, records, windows) == "postgres_restart"
    assert classify(redis, records, windows) == "redis_failover"
    assert classify(_attempt(14.5, 14.6, status=503), records, windows) == "redis_failover"


def test_classify__failure_with_nothing_going_on_is_unexplained():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0)]
    windows = [{"kind": "postgres_restart", "start": 50.0, "end": 52.0, "settled": 53.0}]
    assert classify(_attempt(20.0, 20.1), records, windows) == UNEXPLAINED


def test_classify__database_503_while_another_instance_holds_locks_cut_off_is_that_fault_s():
    cut_off = InstanceRecord(
        name="web1", slot=0, port=1, started=0.0, ready=1.0, network_faults=[("partition_postgres", 10.0, 16.0)]
    )
    waiting = InstanceRecord(name="web2", slot=1, port=2, started=0.0, ready=1.0)
    records = [cut_off, waiting]
    # Waited for a row lock from just before the cut until statement_timeout (10 s).
    locked = Attempt(id="a", t0=9.8, t1=19.8, status=503, server="s1", dependency="database")
    assert classify(locked, records, []) == "partition_postgres"
    # Queued behind the threads that wait for the lock: HAProxy's timeout answers first.
    queued = Attempt(id="q", t0=9.6, t1=24.6, status=504, server="s1")
    assert classify(queued, records, []) == "partition_postgres"
    # Not for a 503 naming Redis, nor for a request long after the heal.
    redis = Attempt(id="b", t0=9.8, t1=19.8, status=503, server="s1", dependency="redis")
    assert classify(redis, records, []) == UNEXPLAINED
    later = Attempt(id="c", t0=40.0, t1=50.0, status=503, server="s1", dependency="database")
    assert classify(later, records, []) == UNEXPLAINED
    # On an instance drained meanwhile: still the lock's, not the drain's.
    waiting.drain_start = 15.0
    assert classify(locked, records, []) == "partition_postgres"
    waiting.drain_start = None
    # A latency window holds no transaction open.
    cut_off.network_faults = [("latency", 10.0, 16.0)]
    assert classify(locked, records, []) == UNEXPLAINED


def test_classify__paused_instance_explains_failures_until_shortly_after_resume():
    records = [InstanceRecord(name="web1", slot=0, port=1, started=0.0, ready=1.0, paused=[(10.0, 15.0)])]
    assert classify(_attempt(12.0, 15.2), records, []) == "paused_instance"
    assert classify(_attempt(30.0, 30.1), records, []) == UNEXPLAINED


def test_schedule__same_seed_same_plan_and_every_other_step_scales_in():
    faults = dict.fromkeys(FAULTS, True)
    a = Schedule.build(seed=3, duration=600, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    b = Schedule.build(seed=3, duration=600, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    assert a == b
    levels = [level for _, level in a.levels]
    scale_ins = sum(1 for before, after in itertools.pairwise(levels) if after < before)
    assert scale_ins >= 20
    assert len(a.web_kills) >= 20
    assert len(a.redis_restarts) == 1
    assert len(a.postgres_restarts) == 1
    assert len(a.postgres_failovers) == 2
    # A failover every two minutes or so, never two in a row within a Sentinel's retry period.
    assert len(a.redis_failovers) == 5
    assert all(later - earlier > 60 for earlier, later in itertools.pairwise(a.redis_failovers))


def test_schedule__faults_can_be_turned_off():
    faults = dict.fromkeys(FAULTS, False)
    plan = Schedule.build(seed=3, duration=60, min_instances=2, max_instances=4, kill_every=25, faults=faults)
    assert plan.web_kills == plan.worker_kills == plan.pauses == plan.redis_restarts == plan.postgres_restarts == []
    assert plan.redis_failovers == plan.postgres_failovers == []


def test_schedule__a_short_run_fails_redis_over_once_while_scaling_up_not_in_its_scale_in():
    plan = Schedule.build(seed=11, duration=30, min_instances=2, max_instances=4, kill_every=25, faults={})
    (failover,) = plan.redis_failovers
    assert plan.desired(failover) > 2
    assert plan.desired(failover - 2) == plan.desired(failover + 2) == plan.desired(failover)


def _op(*attempts: Attempt, write: bool = True, flow: str = "board", kind: str = "post") -> Op:
    return Op(id="op", flow=flow, kind=kind, t0=attempts[0].t0, attempts=list(attempts), write=write)


def test_fault_figures__writes_ok_again_after_the_last_failed_write_and_failures_by_response():
    window = {"kind": "redis_failover", "start": 10.0, "promoted": 12.0, "end": 12.5, "settled": 13.0}
    failed = [
        Attempt(id="a", t0=10.1, t1=10.8, status=503, dependency="redis", cause="redis_failover"),
        Attempt(id="b", t0=11.5, t1=12.1, status=503, dependency="redis", cause="redis_failover"),
        Attempt(id="c", t0=11.0, t1=11.2, error="ConnectionError", cause="redis_failover"),
    ]
    ops = [
        _op(failed[0], Attempt(id="a2", t0=12.4, t1=12.6, status=201)),
        _op(failed[1], Attempt(id="b2", t0=13.0, t1=13.1, status=201)),
        _op(failed[2], write=False),
        # A write that went through before the last failure does not count as recovered, nor
        # one that does not need Redis alone, nor a refusal.
        _op(Attempt(id="d", t0=10.5, t1=10.6, status=201)),
        _op(Attempt(id="v", t0=11.6, t1=11.9, status=201), flow="proposals", kind="vote"),
        _op(Attempt(id="r", t0=11.6, t1=11.9, status=409), flow="queues", kind="ack"),
        Op(id="pg", flow="stakes", kind="stake", t0=11.6, attempts=[Attempt(id="e", t0=11.6, t1=11.7, status=201)]),
        # Failed by HAProxy (every instance unready), not by Redis: its kind proves nothing.
        Op(
            id="lb",
            flow="stakes",
            kind="unstake",
            t0=11.0,
            attempts=[
                Attempt(id="f", t0=11.0, t1=11.1, status=503, server="<NOSRV>", cause="redis_failover"),
                Attempt(id="g", t0=11.7, t1=11.8, status=201),
            ],
        ),
    ]
    for op in ops:
        op.outcome, op.t1 = "acked", op.attempts[-1].t1
    figures = fault_figures(ops, [], [window], None)["redis_failover"]
    assert figures["count"] == 1
    assert figures["by_response"] == {"503 redis": 2, "ConnectionError": 1, "503 no instance up": 1}
    assert figures["recovery_s"] == [
        {
            "at": 10.0,
            "writes_ok_after_s": 2.6,
            "retried_ok_after_s": 3.1,
            "failed_requests": 4,
            "promoted_after_s": 2.0,
            "back_after_s": 2.5,
        }
    ]


def test_schedule__postgres_failover_mid_run_and_other_faults_keep_their_times():
    on = Schedule.build(seed=5, duration=60, min_instances=2, max_instances=4, kill_every=25, faults={})
    off = Schedule.build(
        seed=5, duration=60, min_instances=2, max_instances=4, kill_every=25, faults={"postgres_failover": False}
    )
    assert len(on.postgres_failovers) == 1
    assert 27 <= on.postgres_failovers[0] <= 33
    assert (on.levels, on.web_kills, on.redis_restarts, on.postgres_restarts) == (
        off.levels, off.web_kills, off.redis_restarts, off.postgres_restarts,
    )  # fmt: skip


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


def test_fault_figures__writes_ok_again_counts_from_the_start_when_a_failure_began_before_it():
    # A write that failed on the new primary's way up began just before the stop (the checker
    # gives the fault the failures of its first half second); another, begun after that one and
    # over before the stop, is no recovery: writes are ok again at the first success after it.
    window = {"kind": "postgres_failover", "start": 10.0, "end": 10.2, "settled": 10.5}
    failed = Attempt(id="a", t0=9.6, t1=9.8, status=503, dependency="database", cause="postgres_failover")
    ops = [
        _op(failed, Attempt(id="a2", t0=10.6, t1=10.9, status=201), flow="stakes", kind="stake"),
        _op(Attempt(id="b", t0=9.7, t1=9.9, status=201), flow="stakes", kind="stake"),
    ]
    for op in ops:
        op.outcome, op.t1 = "acked", op.attempts[-1].t1
    (occurrence,) = fault_figures(ops, [], [window], None)["postgres_failover"]["recovery_s"]
    assert occurrence["writes_ok_after_s"] == 0.9
