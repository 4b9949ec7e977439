"""report.json, timeline.png and the summary table of a run."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.run import Run

MARKERS = {
    "sigkill_web": ("SIGKILL web", "red", "x"),
    "sigkill_worker": ("SIGKILL worker", "darkred", "X"),
    "drain": ("drain (scale-in)", "tab:blue", "v"),
    "scale_up": ("scale-up", "tab:green", "^"),
    "pause": ("SIGSTOP", "tab:purple", "s"),
    "redis_restart": ("Redis restart", "tab:orange", "D"),
    "postgres_restart": ("PostgreSQL restart", "tab:brown", "P"),
    "postgres_failover": ("PostgreSQL failover", "black", "*"),
    "redis_failover": ("Redis failover", "gold", "*"),
    "partition": ("partition (packets dropped)", "black", "|"),
    "heal": ("partition healed", "gray", "|"),
    "latency": ("latency +200 ms", "tab:cyan", "*"),
}
# The per-fault table's rows of chaos/netfaults.py's kinds: each hits one instance's network.
NETWORK_FAULTS = {
    "partition_postgres": "partition from PostgreSQL",
    "partition_redis": "partition from Redis",
    "partition_lb": "partition from the load balancer",
}

# Flows whose writes are PostgreSQL rows (the board and queue messages are Redis's): their first
# success after a PostgreSQL failover is when the service writes again.
POSTGRES_WRITE_FLOWS = frozenset({"stakes", "purchases", "proposals", "conversations", "decisions"})


def postgres_failovers(run: Run) -> list[dict[str, Any]]:
    """Per PostgreSQL failover: its steps, the failed requests of its window by cause and by
    status, and the seconds from the primary's stop to the first PostgreSQL write acknowledged
    by an attempt sent after the stop (none sent earlier can have reached the new primary)."""
    if run.platform is None:
        return []
    ops, _ = run.recorder.snapshot()
    measured = []
    for window in run.platform.dependency_windows:
        if window["kind"] != "postgres_failover" or window.get("primary_stopped") is None:
            continue
        stopped = window["primary_stopped"]
        until = (window.get("settled") or window.get("end") or stopped) + 3.0
        failed = [a for op in ops for a in op.attempts if a.failed and stopped - 0.5 <= a.t1 and a.t0 <= until]
        written = [
            a.t1
            for op in ops
            if op.write and op.flow in POSTGRES_WRITE_FLOWS
            for a in op.attempts
            if a.t0 >= stopped and a.status is not None and 200 <= a.status < 300
        ]
        measured.append(
            {
                "stopped_at": round(stopped, 2),
                "promoted_after_s": _since(window.get("standby_promoted"), stopped),
                "rebuilt_after_s": _since(window.get("rebuilt_as_standby"), stopped),
                "instances_ready_after_s": _since(window.get("settled"), stopped),
                "writes_ok_after_s": _since(min(written) if written else None, stopped),
                "failed_requests": len(failed),
                "failed_by_cause": dict(Counter(a.cause or "unclassified" for a in failed)),
                "failed_by_status": dict(Counter(str(a.status) if a.status else "no response" for a in failed)),
            }
        )
    return measured


def _since(t: float | None, start: float) -> float | None:
    return None if t is None else round(t - start, 2)


def table(verdict: dict[str, Any]) -> str:
    latency = verdict["latency_ms"]
    causes = ", ".join(f"{k} {v}" for k, v in sorted(verdict["errors_by_cause"].items())) or "none"
    rows = [
        ("operations acknowledged (writes)", verdict["acknowledged"]),
        ("operations acknowledged (writes and checked reads)", verdict["acknowledged_operations"]),
        ("lost", verdict["lost"]),
        ("duplicated", verdict["duplicated"]),
        ("double executions", verdict["double_executions"]),
        ("failed during planned scale-in", verdict["failed_during_planned_scale_in"]),
        ("unexplained failures", verdict["unexplained_failures"]),
        ("unexpected responses", verdict["unexpected_responses"]),
        ("retries exhausted", verdict["retries_exhausted"]),
        ("operations (all) / HTTP requests", f"{verdict['operations']} / {verdict['requests']}"),
        ("retried, then succeeded", verdict["ops_retried_then_succeeded"]),
        ("SIGKILLs (web / worker)", f"{verdict['kills']} / {verdict['worker_kills']}"),
        ("drained scale-ins / scale-ups", f"{verdict['drains']} / {verdict['scale_ups']}"),
        ("SIGSTOP pauses", verdict["pauses"]),
        ("Redis / PostgreSQL restarts", f"{verdict['redis_restarts']} / {verdict['postgres_restarts']}"),
        *_failover_rows(verdict.get("postgres_failover", [])),
        (
            "Redis failovers (REDIS_MIN_REPLICAS_ACK)",
            f"{verdict.get('redis_failovers', 0)} ({verdict.get('redis_min_replicas_ack')})",
        ),
        ("latency p50 / p99 (ms)", f"{latency['p50']} / {latency['p99']}"),
        ("failed requests by cause", causes),
    ]
    for kind, fault in (verdict.get("network_faults") or {}).items():
        if isinstance(fault, dict):
            failed = ", ".join(f"{k} {v}" for k, v in sorted(fault["requests_failed_by_cause"].items())) or "none"
            rows.append(
                (
                    f"{kind}: faults / failed (by cause)",
                    f"{fault['faults']} / {fault['requests_failed']} ({failed}); longest request "
                    f"{fault['longest_request_s']} s; writes succeed again after "
                    f"{fault['seconds_until_writes_succeed']} s",
                )
            )
    if verdict.get("network_faults"):
        rows.append(
            (
                "longest request (bound)",
                f"{verdict['network_faults']['longest_request_s']} s "
                f"({verdict['network_faults']['request_bound_s']} s)",
            )
        )
    cpu = verdict.get("cpu")
    if cpu:
        kinds = ", ".join(f"{kind} {seconds}" for kind, seconds in cpu["by_kind_s"].items())
        rows.append(
            (
                "CPU seconds during the load: the run's / the machine's",
                f"{cpu['run_s']} / {cpu['machine_busy_s']} on {cpu['cores']} cores ({kinds})",
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _failover_rows(failovers: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for i, f in enumerate(failovers, 1):
        name = f"PostgreSQL failover {i} (t {f['stopped_at']} s)"
        steps = f"promoted {f['promoted_after_s']} s, instances ready {f['instances_ready_after_s']} s"
        rows.append((f"{name}: writes again after the stop (s)", f"{f['writes_ok_after_s']} ({steps})"))
        causes = ", ".join(f"{k} {v}" for k, v in sorted(f["failed_by_cause"].items())) or "none"
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(f["failed_by_status"].items())) or "none"
        rows.append((f"{name}: failed requests", f"{f['failed_requests']}: {causes}; by status {statuses}"))
    return rows


def fault_table(verdict: dict[str, Any]) -> str:
    """One row per fault kind: how often, the requests it failed (by how), and for a dependency
    fault the seconds until writes succeeded again (max and each occurrence)."""
    lines = [
        "| fault | count | failed requests | by response | writes ok again after (s): max (each) "
        "| retries all ok after (s): max |",
        "|-------|-------|-----------------|-------------|----------------------------------------|------|",
    ]
    for kind, entry in sorted(verdict.get("faults", {}).items()):
        label = NETWORK_FAULTS.get(kind) or MARKERS.get(kind, (kind,))[0]
        by_response = ", ".join(f"{k} {v}" for k, v in sorted(entry["by_response"].items())) or "none"
        occurrences = entry.get("recovery_s")
        if occurrences:
            values = [o["writes_ok_after_s"] for o in occurrences]
            known = [v for v in values if v is not None]
            shown = ", ".join("no write failed" if v is None else str(v) for v in values)
            recovery = f"{max(known) if known else '-'} ({shown})"
            retried = [o["retried_ok_after_s"] for o in occurrences if o.get("retried_ok_after_s") is not None]
            retries = str(max(retried)) if retried else "-"
        else:
            one_instance = kind in ("sigkill_web", "pause", "latency", *NETWORK_FAULTS)
            recovery = "n/a (other instances serve)" if one_instance else "n/a"
            retries = "n/a"
        lines.append(
            f"| {label} | {entry['count']} | {entry['failed_requests']} | {by_response} | {recovery} | {retries} |"
        )
    return "\n".join(lines)


def plot(run: Run, verdict: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops, events = run.recorder.snapshot()
    end = max([s["t"] for s in run.recorder.samples] + [1.0])
    seconds = int(end) + 1
    requests_per_s: Counter[int] = Counter()
    errors_per_s: Counter[int] = Counter()
    for op in ops:
        for attempt in op.attempts:
            requests_per_s[int(attempt.t0)] += 1
            if attempt.failed:
                errors_per_s[int(attempt.t0)] += 1
    xs = list(range(seconds))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7), sharex=True, height_ratios=[1, 1.3])
    samples = run.recorder.samples
    ax1.step([s["t"] for s in samples], [s["up"] for s in samples], where="post", label="UP in HAProxy")
    ax1.step([s["t"] for s in samples], [s["running"] for s in samples], where="post", label="running", alpha=0.7)
    ax1.step([s["t"] for s in samples], [s["draining"] for s in samples], where="post", label="draining", alpha=0.7)
    ax1.set_ylabel("instances")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(
        f"chaos run seed {verdict['seed']}: {verdict['acknowledged']} acknowledged, {verdict['lost']} lost, "
        f"{verdict['duplicated']} duplicated, {verdict['double_executions']} double executions, "
        f"{verdict['failed_during_planned_scale_in']} failed in planned scale-in"
    )
    ax2.plot(xs, [requests_per_s[x] for x in xs], label="requests/s", color="tab:gray")
    ax2.bar(xs, [errors_per_s[x] for x in xs], label="failed requests/s", color="red", width=1.0)
    top = max([requests_per_s[x] for x in xs] + [1])
    seen = set()
    for event in events:
        if run.load_end is not None and event.t > run.load_end:
            continue  # the final scale-in after the checks is not part of the run
        if event.kind in MARKERS:
            label, color, marker = MARKERS[event.kind]
            ax2.scatter([event.t], [top * 1.05], color=color, marker=marker, label=None if label in seen else label)
            ax1.axvline(event.t, color=color, alpha=0.25, linewidth=1)
            seen.add(label)
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("requests")
    ax2.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(run: Run, verdict: dict[str, Any]) -> None:
    _, events = run.recorder.snapshot()
    verdict = {
        **verdict,
        "postgres_failover": postgres_failovers(run),
        "events": [{"t": round(e.t, 3), "kind": e.kind, "target": e.target, **e.detail} for e in events],
    }
    (run.report_dir / "report.json").write_text(json.dumps(verdict, indent=2, default=str))
    # Every operation and attempt, for digging into a violation after the fact.
    ops, _ = run.recorder.snapshot()
    with (run.report_dir / "operations.jsonl").open("w") as out:
        for op in ops:
            out.write(json.dumps(asdict(op), default=str) + "\n")
    try:
        plot(run, verdict, run.report_dir / "timeline.png")
    except Exception as exc:  # the plot is a convenience: never lose the verdict over it
        print(f"timeline.png not drawn: {exc!r}")
    summary = table(verdict) + "\n\n" + fault_table(verdict)
    (run.report_dir / "summary.md").write_text(summary + "\n")
    print()
    print(summary)
    print()
    if verdict["violations"]:
        print(f"VIOLATIONS ({len(verdict['violations'])}):")
        for line in verdict["violations"]:
            print("  - " + line)
    else:
        print("No violations.")
    print(f"report: {run.report_dir / 'report.json'}  plot: {run.report_dir / 'timeline.png'}")
