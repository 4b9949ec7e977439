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
}


def table(verdict: dict[str, Any]) -> str:
    latency = verdict["latency_ms"]
    causes = ", ".join(f"{k} {v}" for k, v in sorted(verdict["errors_by_cause"].items())) or "none"
    rows = [
        ("operations acknowledged (writes)", verdict["acknowledged"]),
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
        ("latency p50 / p99 (ms)", f"{latency['p50']} / {latency['p99']}"),
        ("failed requests by cause", causes),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
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
    summary = table(verdict)
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
