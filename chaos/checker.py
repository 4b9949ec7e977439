"""The verdict: failed requests by cause, and the flows' invariants, into one list of violations.

A failed attempt is explained only by something that happened to the instance that handled it
(HAProxy's log names the server slot for each attempt id): a SIGKILL, a SIGSTOP, or a Redis or
PostgreSQL restart in progress. A failure on an instance that was being *drained* is a violation
(readiness must move traffic away before the listener closes); so is one nothing explains.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.recorder import ABANDONED, ACKED, UNEXPECTED, Attempt, Recorder
from chaos.scaler import InstanceRecord

if TYPE_CHECKING:
    from chaos.flows.base import CheckResult
    from chaos.run import Run

LINE = re.compile(r"^(?P<id>\S+) (?P<server>\S+) (?P<status>-?\d+) (?P<term>\S+) (?P<retries>\S+) (?P<ta>-?\d+)")
# Seconds around a fault during which a failure is attributed to it (HAProxy's checks take up to
# ~1 s to mark a dead or paused server down; connections to it fail until then).
KILL_WINDOW = 3.0
SETTLE = 3.0

PLANNED_SCALE_IN = "planned_scale_in"
UNEXPLAINED = "unexplained"


def attach_haproxy_log(recorder: Recorder, path: Path) -> None:
    by_id: dict[str, re.Match] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            match = LINE.match(line)
            if match and match["id"] != "-":
                by_id[match["id"]] = match
    ops, _ = recorder.snapshot()
    for op in ops:
        for attempt in op.attempts:
            match = by_id.get(attempt.id)
            if match:
                attempt.server = match["server"]
                attempt.termination = match["term"]


def _instance_on(records: list[InstanceRecord], slot: int, t: float) -> InstanceRecord | None:
    """The instance that occupied a server slot at time t (the latest one started before t)."""
    candidates = [r for r in records if r.slot == slot and r.started <= t]
    return max(candidates, key=lambda r: r.started) if candidates else None


def classify(attempt: Attempt, records: list[InstanceRecord], windows: list[dict]) -> str:
    """The cause of one failed attempt; PLANNED_SCALE_IN and UNEXPLAINED are violations."""
    t0, t1 = attempt.t0, attempt.t1
    in_dependency_restart = next(
        (
            w["kind"]
            for w in windows
            if w["start"] - 0.5 <= t1 and t0 <= (w.get("settled") or w.get("end") or t1) + SETTLE
        ),
        None,
    )
    server = attempt.server or ""
    if server.startswith("s") and server[1:].isdigit():
        record = _instance_on(records, int(server[1:]), t0)
        if record is not None:
            if record.killed is not None and record.killed - 0.5 <= t1:
                return "sigkill"
            for start, end in record.paused:
                if start - 0.5 <= t1 and t0 <= end + KILL_WINDOW:
                    return "paused_instance"
            if in_dependency_restart:
                return in_dependency_restart
            if record.drain_start is not None and record.drain_start <= t1:
                return PLANNED_SCALE_IN
            return UNEXPLAINED
    # No server in HAProxy's log (no server was up, or HAProxy closed the client connection
    # silently after the server's connection died): a kill or pause at that moment explains it.
    for record in records:
        if record.killed is not None and record.killed - 0.5 <= t1 and t0 <= record.killed + KILL_WINDOW:
            return "sigkill"
        for start, end in record.paused:
            if start - 0.5 <= t1 and t0 <= end + KILL_WINDOW:
                return "paused_instance"
    if in_dependency_restart:
        return in_dependency_restart
    for record in records:
        draining = record.drain_start is not None and record.drain_start - 0.5 <= t1
        if draining and t0 <= (record.exited or t1) + KILL_WINDOW:
            return PLANNED_SCALE_IN
    return UNEXPLAINED


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def verdict(run: Run, results: dict[str, CheckResult]) -> dict[str, Any]:
    recorder = run.recorder
    platform = run.platform
    assert platform is not None
    ops, events = recorder.snapshot()
    records = list(platform.records.values())
    windows = platform.dependency_windows

    causes: Counter[str] = Counter()
    failed_examples: dict[str, list[dict]] = {}
    for op in ops:
        for attempt in op.attempts:
            if attempt.failed:
                attempt.cause = classify(attempt, records, windows)
                causes[attempt.cause] += 1
                examples = failed_examples.setdefault(attempt.cause, [])
                if len(examples) < 5:
                    examples.append(
                        {
                            "attempt": attempt.id,
                            "op": f"{op.flow}.{op.kind}",
                            "t": round(attempt.t0, 3),
                            "status": attempt.status,
                            "error": attempt.error,
                            "server": attempt.server,
                            "termination": attempt.termination,
                        }
                    )

    write_ops = [op for op in ops if op.write]
    acked = [op for op in write_ops if op.outcome == ACKED]
    unexpected = [op for op in ops if op.outcome == UNEXPECTED]
    abandoned = [op for op in ops if op.outcome == ABANDONED]
    latencies = [(a.t1 - a.t0) * 1000 for op in ops for a in op.attempts if a.t1 and not a.failed]

    violations: list[str] = []
    totals = {"lost": 0, "duplicated": 0, "double_executions": 0}
    flows_out = {}
    for name, result in results.items():
        for key in totals:
            totals[key] += getattr(result, key)
        violations += [f"{name}: {v}" for v in result.violations]
        flows_out[name] = {
            "acknowledged": result.acknowledged,
            "lost": result.lost,
            "duplicated": result.duplicated,
            "double_executions": result.double_executions,
            "violations": result.violations,
            **result.details,
        }
    if totals["lost"]:
        violations.append(f"{totals['lost']} acknowledged writes lost")
    if totals["duplicated"]:
        violations.append(f"{totals['duplicated']} writes duplicated")
    if totals["double_executions"]:
        violations.append(f"{totals['double_executions']} proposals executed more than once")
    if causes[PLANNED_SCALE_IN]:
        violations.append(f"{causes[PLANNED_SCALE_IN]} requests failed during a planned scale-in")
    if causes[UNEXPLAINED]:
        violations.append(f"{causes[UNEXPLAINED]} requests failed with no kill, pause or restart to explain it")
    for op in unexpected[:10]:
        violations.append(f"unexpected response: {op.flow}.{op.kind} -> {op.status} {str(op.body)[:200]}")
    if len(unexpected) > 10:
        violations.append(f"... {len(unexpected) - 10} more unexpected responses")
    for op in abandoned[:10]:
        violations.append(f"retries exhausted: {op.flow}.{op.kind} ({len(op.attempts)} attempts, last {op.status})")
    for error in run.errors[:5] + platform.errors[:5]:
        violations.append(f"harness: {error.strip().splitlines()[-1] if error.strip() else error}")

    kinds = Counter(e.kind for e in events if run.load_end is None or e.t <= run.load_end)
    return {
        "seed": run.args.seed,
        "duration_s": run.args.duration,
        "acknowledged": len(acked),
        "lost": totals["lost"],
        "duplicated": totals["duplicated"],
        "double_executions": totals["double_executions"],
        "failed_during_planned_scale_in": causes[PLANNED_SCALE_IN],
        "unexplained_failures": causes[UNEXPLAINED],
        "unexpected_responses": len(unexpected),
        "retries_exhausted": len(abandoned),
        "operations": len(ops),
        "operations_by_kind": dict(Counter(f"{op.flow}.{op.kind}:{op.outcome}" for op in ops)),
        "requests": sum(len(op.attempts) for op in ops),
        "failed_requests": sum(causes.values()),
        "errors_by_cause": dict(causes),
        "failed_examples": failed_examples,
        "ops_retried_then_succeeded": sum(
            1 for op in ops if op.outcome == ACKED and any(a.failed for a in op.attempts)
        ),
        "latency_ms": {
            "p50": _round(_percentile(latencies, 50)),
            "p99": _round(_percentile(latencies, 99)),
            "max": _round(max(latencies) if latencies else None),
        },
        "kills": kinds["sigkill_web"],
        "worker_kills": kinds["sigkill_worker"],
        "drains": kinds["drain"],
        "scale_ups": kinds["scale_up"],
        "pauses": kinds["pause"],
        "redis_restarts": kinds["redis_restart"],
        "postgres_restarts": kinds["postgres_restart"],
        "forced_kills_at_budget": kinds["sigkill_at_budget"],
        "flows": flows_out,
        "outbox": run.outbox,
        "flows_skipped": run.skipped,
        "features": sorted(run.features()),
        "instances": [vars(r) for r in records],
        "violations": violations,
        "harness_errors": run.errors + platform.errors,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
