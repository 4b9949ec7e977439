"""The chaos report's PostgreSQL failover measures and its per-fault table, from recorded figures."""

import re
from types import SimpleNamespace

from chaos.recorder import Attempt, Recorder
from chaos.report import fault_table, postgres_failovers, table


def _op(recorder: Recorder, flow: str, *attempts: tuple[float, float, int | None]) -> None:
    op = recorder.new_op(flow, "write")
    for i, (t0, t1, status) in enumerate(attempts):
        attempt = Attempt(id=f"{op.id}-{i}", t0=t0, t1=t1, status=status, error=None if status else "reset")
        if attempt.failed:
            attempt.cause = "postgres_failover"
        op.attempts.append(attempt)


def test_postgres_failovers__writes_back_is_the_first_postgresql_write_sent_after_the_stop():
    recorder = Recorder()
    window = {"kind": "postgres_failover", "start": 9.9, "primary_stopped": 10.0, "standby_promoted": 10.5}
    window.update(end=10.5, rebuilt_as_standby=12.0, settled=13.0)
    _op(recorder, "votes_not_postgres_flow", (10.1, 10.2, 201))  # not a PostgreSQL flow: ignored
    _op(recorder, "proposals", (9.5, 10.05, 201))  # sent before the stop: the old primary took it
    _op(recorder, "board", (10.2, 10.3, 201))  # Redis: writes on during the switch
    _op(recorder, "stakes", (10.1, 10.4, 503), (10.9, 11.4, 201))
    _op(recorder, "purchases", (10.3, 12.0, None), (12.1, 12.2, 201))
    run = SimpleNamespace(platform=SimpleNamespace(dependency_windows=[window]), recorder=recorder)

    [measured] = postgres_failovers(run)

    assert measured["writes_ok_after_s"] == 1.4  # the stake's retry, ended at 11.4
    assert measured["promoted_after_s"] == 0.5
    assert measured["failed_requests"] == 2
    assert measured["failed_by_status"] == {"503": 1, "no response": 1}
    assert measured["failed_by_cause"] == {"postgres_failover": 2}


COUNTS = """acknowledged acknowledged_operations lost duplicated double_executions failed_during_planned_scale_in
unexplained_failures unexpected_responses retries_exhausted operations requests ops_retried_then_succeeded kills
worker_kills drains scale_ups pauses redis_restarts postgres_restarts"""


def test_table__names_each_failover_and_its_measures():
    verdict = {
        "latency_ms": {"p50": 1, "p99": 2},
        "errors_by_cause": {},
        **dict.fromkeys(COUNTS.split(), 0),
        "postgres_failover": [
            {
                "stopped_at": 30.0,
                "promoted_after_s": 0.2,
                "instances_ready_after_s": 3.0,
                "writes_ok_after_s": 0.9,
                "failed_requests": 4,
                "failed_by_cause": {"postgres_failover": 4},
                "failed_by_status": {"503": 4},
            }
        ],
    }
    verdict["acknowledged_operations"] = 7
    text = table(verdict)
    assert re.search(r"\| operations acknowledged \(writes and checked reads\) +\| 7 \|", text)
    assert "PostgreSQL failover 1 (t 30.0 s): writes again after the stop (s) | 0.9 (promoted 0.2 s" in text
    assert "4: postgres_failover 4; by status 503 4" in text


def test_fault_table__network_faults_have_rows_beside_the_failovers():
    verdict = {
        "faults": {
            "partition_redis": {"count": 1, "failed_requests": 3, "by_response": {"503 redis": 3}},
            "latency": {"count": 1, "failed_requests": 0, "by_response": {}},
            "redis_failover": {
                "count": 1,
                "failed_requests": 2,
                "by_response": {"503 redis": 2},
                "recovery_s": [{"writes_ok_after_s": 2.5, "retried_ok_after_s": 4.0}],
            },
        }
    }
    rows = fault_table(verdict).splitlines()
    assert "| partition from Redis | 1 | 3 | 503 redis 3 | n/a (other instances serve) | n/a |" in rows
    assert "| latency +200 ms | 1 | 0 | none | n/a (other instances serve) | n/a |" in rows
    assert "| Redis failover | 1 | 2 | 503 redis 2 | 2.5 (2.5) | 4.0 |" in rows
