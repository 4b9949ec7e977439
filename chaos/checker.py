"""The verdict: failed requests by cause, and the flows' invariants, into one list of violations.

A failed attempt is explained only by something that happened to the instance that handled it
(HAProxy's log names the server slot for each attempt id): a SIGKILL, a SIGSTOP, a network fault
of its namespace (a partition, added latency), or a Redis or PostgreSQL restart in progress. A
failure on an instance that was being *drained* is a violation (readiness must move traffic away
before the listener closes); so is one nothing explains.

One fault reaches past its instance: an instance cut off from PostgreSQL (or paused) in the
middle of a transaction keeps that transaction's row locks (a sale's row, say) until the server
ends it, at the heal or after idle_in_transaction_session_timeout. A request on another instance
that waits for such a lock gives up at statement_timeout with a 503 naming the database, or,
queued behind the threads that wait for it, meets HAProxy's 15 s bound first (a 504): either is
the cut-off instance's fault's.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
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
# The dependency a 503 names -> how the names of its faults begin (redis_restart, redis_failover...).
DEPENDENCY_FAULT_PREFIX = {"redis": "redis_", "database": "postgres_"}
_PREFIX_OF: dict[str, str] = defaultdict(lambda: "\0", DEPENDENCY_FAULT_PREFIX)
# Writes whose data lives in Redis alone (flow, kind): a Redis fault's recovery is measured on
# them. Other writes touch Redis on the side (a throttle, a lock, the hot history) and some go
# through while it is gone, which would say "recovered" too early.
REDIS_WRITES = {("board", "post"), ("queues", "publish"), ("queues", "ack")}
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
    during = [
        w["kind"] for w in windows if w["start"] - 0.5 <= t1 and t0 <= (w.get("settled") or w.get("end") or t1) + SETTLE
    ]
    # Two dependency faults close together: a 503 naming its dependency belongs to that one's.
    prefix = DEPENDENCY_FAULT_PREFIX.get(attempt.dependency or "")
    in_dependency_restart = next((kind for kind in during if prefix and kind.startswith(prefix)), None) or next(
        iter(during), None
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
            for kind, start, end in record.network_faults:
                if start - 0.5 <= t1 and t0 <= end + SETTLE:
                    return kind
            if in_dependency_restart:
                return in_dependency_restart
            # Before the drain: the request waited for a lock, it was not cut off by the drain.
            held = _lock_held_by_a_cut_off_instance(attempt, records)
            if held:
                return held
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
        for kind, start, end in record.network_faults:
            if start - 0.5 <= t1 and t0 <= end + SETTLE:
                return kind
    if in_dependency_restart:
        return in_dependency_restart
    for record in records:
        draining = record.drain_start is not None and record.drain_start - 0.5 <= t1
        if draining and t0 <= (record.exited or t1) + KILL_WINDOW:
            return PLANNED_SCALE_IN
    # No lock rule here: any instance's partition or pause explained the attempt above.
    return UNEXPLAINED


# The faults that leave an instance's PostgreSQL transactions open, holding their row locks.
LOCK_HOLDING_FAULTS = ("partition_postgres", "paused_instance")


def _lock_held_by_a_cut_off_instance(attempt: Attempt, records: list[InstanceRecord]) -> str | None:
    """A database 503, or a gateway timeout, that waited while some instance was cut off from
    PostgreSQL or paused (see the module docstring): that fault's kind, else None."""
    if not (attempt.status == 504 or (attempt.status == 503 and attempt.dependency == "database")):
        return None
    t0, t1 = attempt.t0, attempt.t1
    for record in records:
        spans = [(kind, start, end) for kind, start, end in record.network_faults if kind in LOCK_HOLDING_FAULTS]
        spans += [("paused_instance", start, end) for start, end in record.paused]
        for kind, start, end in spans:
            if start - 0.5 <= t1 and t0 <= end + SETTLE:
                return kind
    return None


def response_of(attempt: Attempt) -> str:
    """How a failed attempt failed, as the client saw it: "503 redis" (the service's 503 names the
    dependency), "503 no instance up" (HAProxy's own: every instance unready), "ConnectionError"."""
    if attempt.error:
        return attempt.error
    if attempt.dependency:
        return f"{attempt.status} {attempt.dependency}"
    if attempt.server == "<NOSRV>":
        return f"{attempt.status} no instance up"
    return str(attempt.status)


# Which fault a failed attempt's cause (see classify) belongs to.
CAUSE_OF_FAULT = {"sigkill_web": "sigkill", "pause": "paused_instance"}


def fault_figures(ops: list, events: list, windows: list[dict], load_end: float | None) -> dict[str, Any]:
    """Per fault kind: how many, the failed requests it explains (by how they failed), and for a
    dependency fault, per occurrence, seconds from its start (a Redis primary's death):

    - `writes_ok_after_s`: until writes succeeded again: the end of the first 2xx attempt (a
      refusal such as a 409 may come before the dependency is asked), begun after the fault's
      start and its last failed write attempt's, of a write that needs the dependency. For Redis those
      are REDIS_WRITES (and, when none of them failed, the first begun after the fault's start);
      for another dependency the kinds of write whose 503 named it (else the kinds that failed):
      writes that never touch it go on meanwhile and say nothing. None when no write failed.
    - `retried_ok_after_s`: until the last operation that had a failed attempt succeeded on a
      retry (the clients back off, honouring Retry-After).
    """
    failed = [(op, a) for op in ops for a in op.attempts if a.failed and a.cause]
    figures: dict[str, Any] = {}
    for kind in ("sigkill_web", "sigkill_worker", "pause"):
        count = sum(1 for e in events if e.kind == kind and (load_end is None or e.t <= load_end))
        cause = CAUSE_OF_FAULT.get(kind)
        by_response = Counter(response_of(a) for _, a in failed if cause and a.cause == cause)
        figures[kind] = {"count": count, "failed_requests": sum(by_response.values()), "by_response": dict(by_response)}
    for window in windows:
        kind, start = window["kind"], window["start"]
        stop = (window.get("settled") or window.get("end") or start) + SETTLE
        mine = [(op, a) for op, a in failed if a.cause == kind and start - 0.5 <= a.t1 and a.t0 <= stop]
        entry = figures.setdefault(kind, {"count": 0, "failed_requests": 0, "by_response": {}, "recovery_s": []})
        entry["count"] += 1
        by_response = Counter(entry["by_response"])
        by_response.update(response_of(a) for _, a in mine)
        entry["by_response"] = dict(by_response)
        entry["failed_requests"] = sum(by_response.values())
        failed_writes = [(op, a) for op, a in mine if op.write]
        if kind.startswith(DEPENDENCY_FAULT_PREFIX["redis"]):
            kinds = REDIS_WRITES
            failed_writes = [(op, a) for op, a in failed_writes if (op.flow, op.kind) in kinds]
            # None failed (they waited it out inside the service): the first begun after it.
            since = max((a.t0 for _, a in failed_writes), default=start)
        else:
            # The writes that needed the dependency said so (their 503 names it); HAProxy's own
            # 503 while every instance is unready also fails writes that never touch it.
            named = [(op, a) for op, a in failed_writes if a.dependency and kind.startswith(_PREFIX_OF[a.dependency])]
            failed_writes = named or failed_writes
            kinds = {(op.flow, op.kind) for op, _ in failed_writes}
            since = max((a.t0 for _, a in failed_writes), default=None)
        # A failure counted to the fault may have begun before it (one that failed in its first
        # half second): a success begun then, and over before the fault, proves no recovery.
        since = None if since is None else max(since, start)
        recovered = (
            min(
                (
                    a.t1
                    for op in ops
                    if (op.flow, op.kind) in kinds
                    for a in op.attempts
                    if a.t1 and a.status is not None and 200 <= a.status < 300 and a.t0 >= since
                ),
                default=None,
            )
            if since is not None
            else None
        )
        retried = [op.t1 for op in {id(op): op for op, _ in mine}.values() if op.outcome == ACKED]
        occurrence = {
            "at": round(start, 2),
            "writes_ok_after_s": None if recovered is None else round(recovered - start, 2),
            "retried_ok_after_s": round(max(retried) - start, 2) if retried else None,
            "failed_requests": len(mine),
        }
        if "promoted" in window:
            occurrence["promoted_after_s"] = round(window["promoted"] - start, 2)
        if window.get("end") is not None:
            occurrence["back_after_s"] = round(window["end"] - start, 2)
        entry["recovery_s"].append(occurrence)
    return figures


def _percentile(values: list[float], q: int) -> float | None:
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
        # Every operation answered with its 2xx and checked: the writes, and the reads the flows
        # verify (pages, session reads, balances).
        "acknowledged_operations": sum(1 for op in ops if op.outcome == ACKED),
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
        "postgres_failovers": kinds["postgres_failover"],
        "redis_failovers": kinds["redis_failover"],
        "faults": fault_figures(ops, events, windows, run.load_end),
        "dependency_windows": windows,
        "redis_min_replicas_ack": getattr(run, "redis_min_replicas_ack", None),
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
