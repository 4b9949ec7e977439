"""Pluggable shutdown and recovery steps, and the runner that keeps them inside a deadline.

A step is a class with a `name`, a `label` for the report and `run(*, deadline) -> int` (the
count of things it handled). Settings list them by dotted path (LIFECYCLE_SHUTDOWN_STEPS,
LIFECYCLE_RECOVERY_STEPS). The runner gives each step what is left of the deadline and runs it
in a thread: a step that hangs is abandoned at its deadline and reported `timed_out`, so the
process still exits before the platform's SIGKILL.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class StepStatus:
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    SKIPPED = "skipped"


class StepSkipped(Exception):
    """The step has nothing to do in this process (reported as skipped, not as a failure)."""


class StepTimedOut(Exception):
    """Raised by a step that enforces its own deadline (one that cannot run in a thread)."""

    def __init__(self, message: str, count: int = 0, lost: int = 0):
        super().__init__(message)
        self.count = count
        self.lost = lost


@dataclasses.dataclass
class StepContext:
    """What a step may need to know about the process it runs in."""

    instance_id: str | None = None
    kind: str = "web"
    # The procrastinate worker id of a job worker (its claimed jobs are handed back).
    job_worker_id: int | None = None
    # The jobs a job worker was still running when it stopped waiting for them.
    running_job_ids: list[int] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Step(abc.ABC):
    """What a shutdown or recovery step (LIFECYCLE_*_STEPS, dotted paths) must provide."""

    name: str = "step"
    # The report line; `{count}` is replaced by the step's count.
    label: str = "Step ({count})"
    # Seconds this step may take at most; None: whatever is left of the deadline.
    timeout: float | None = None
    # Steps that drive the process itself (gunicorn's arbiter) must run in the calling thread.
    in_thread: bool = True
    # The kind of pending operation this step's count hands over to other instances ("job",
    # "message", ...), for pending_operations_flushed_total; "" when it hands over nothing.
    flushes: str = ""
    # The kind of operation its StepTimedOut(lost=...) gives up ("request", ...), for
    # pending_operations_lost_total; "" for a step that cannot lose anything.
    loses: str = ""
    # A recovery step that only counts (sessions, others' shutdowns) finds nothing to recover:
    # its count does not make a pass worth recording.
    bookkeeping: bool = False
    # A note `run` may leave for the report line of a step that went well (what it left to the
    # steps after it, say); a failure's or a timeout's line says what went wrong instead.
    detail: str = ""
    # Which of an operator's questions about a shutdown the step answers (SHUTDOWN_GROUPS): the
    # process's own steps (drain, finish requests or jobs) and hand-backs flush pending operations.
    group: str = "pending"

    def __init__(self, context: StepContext | None = None):
        self.context = context or StepContext()

    @abc.abstractmethod
    def run(self, *, deadline: float) -> int:
        """Do the step's work before `deadline` (a time.monotonic() value); return a count."""


@dataclasses.dataclass
class StepResult:
    name: str
    label: str
    status: str
    count: int = 0
    duration: float = 0.0
    detail: str = ""
    flushes: str = ""
    # Operations of kind `loses` the step had to give up (requests cut off at the deadline).
    lost: int = 0
    loses: str = ""
    group: str = "pending"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    kind: str
    started_at: float  # time.time()
    budget: float | None = None
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        in_budget = self.budget is None or self.duration <= self.budget
        return in_budget and all(s.status in (StepStatus.OK, StepStatus.SKIPPED) for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "started_at": self.started_at,
            "budget": self.budget,
            "duration": self.duration,
            "ok": self.ok,
            "steps": [s.as_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        steps = [StepResult(**s) for s in data.get("steps", [])]
        return cls(
            kind=data["kind"],
            started_at=data["started_at"],
            budget=data.get("budget"),
            steps=steps,
            duration=data.get("duration", 0.0),
        )


def _release_connections() -> None:
    """Give the step thread's database connection back to the pool (threads keep theirs)."""
    from core.connections import connections_close

    connections_close(pools=False, redis=False)


def load_steps(paths: Iterable[str], context: StepContext) -> list[Step]:
    return [import_string(path)(context) for path in paths]


def format_label(step_label: str, count: int) -> str:
    return step_label.replace("{count}", str(count))


def run_step(step: Step, *, deadline: float, reserve: float = 0.0) -> StepResult:
    """Run one step; never take longer than its timeout or `deadline - reserve`."""
    started = time.monotonic()
    step_deadline = deadline - reserve
    if step.timeout is not None:
        step_deadline = min(step_deadline, started + step.timeout)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["count"] = int(step.run(deadline=step_deadline) or 0)
        except StepSkipped as exc:
            outcome["skipped"] = str(exc)
        except StepTimedOut as exc:
            outcome["timed_out"] = str(exc)
            outcome["count"] = exc.count
            outcome["lost"] = exc.lost
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            if step.in_thread:
                _release_connections()

    if step.in_thread:
        # A daemon thread: a hung step is abandoned and dies with the process.
        thread = threading.Thread(target=target, name=f"lifecycle-step-{step.name}", daemon=True)
        thread.start()
        thread.join(max(0.0, step_deadline - time.monotonic()))
        alive = thread.is_alive()
    else:
        target()
        alive = False
    duration = time.monotonic() - started
    count = outcome.get("count", 0)

    def result(status: str, detail: str = "", *, count: int = count) -> StepResult:
        label = format_label(step.label, count)
        lost = outcome.get("lost", 0)
        return StepResult(
            step.name,
            label,
            status,
            count,
            duration,
            detail,
            flushes=step.flushes,
            lost=lost,
            loses=step.loses,
            group=step.group,
        )

    if alive:
        logger.error("Lifecycle step %s did not finish in %.2f s: cut off", step.name, duration)
        return result(StepStatus.TIMED_OUT, "cut off at its deadline")
    if "timed_out" in outcome:
        logger.error("Lifecycle step %s timed out: %s", step.name, outcome["timed_out"])
        return result(StepStatus.TIMED_OUT, outcome["timed_out"])
    if "skipped" in outcome:
        return result(StepStatus.SKIPPED, outcome["skipped"], count=0)
    if "error" in outcome:
        exc = outcome["error"]
        logger.error("Lifecycle step %s failed: %r", step.name, exc, exc_info=exc)
        return result(StepStatus.FAILED, f"{type(exc).__name__}: {exc}")
    return result(StepStatus.OK, step.detail)


# Seconds kept for each step still to come, so that a hung step cannot starve the ones after it
# (closing connections, storing the report).
STEP_FLOOR = 0.25


def time_after(steps: int, reserve: float, deadline_seconds: float) -> float:
    """Seconds to keep, after the requests or jobs are finished, for `steps` steps and the report."""
    return max(reserve + STEP_FLOOR * steps, min(2.0, 0.2 * deadline_seconds))


def run_steps(
    steps: Iterable[Step],
    *,
    report: Report,
    deadline: float,
    reserve: float = 0.0,
    on_result: Callable[[StepResult], None] | None = None,
) -> Report:
    steps = list(steps)
    limit = deadline - reserve
    for index, step in enumerate(steps):
        after = len(steps) - index - 1
        # Leave a floor for each later step, but give this one its floor too while time remains.
        step_deadline = max(limit - STEP_FLOOR * after, min(time.monotonic() + STEP_FLOOR, limit))
        result = run_step(step, deadline=step_deadline)
        report.steps.append(result)
        if on_result is not None:
            on_result(result)
    return report


# The headings of a shutdown report: the four questions an operator checks a shutdown for.
SHUTDOWN_GROUPS = {
    "pending": "Flushing pending operations",
    "sessions": "Persisting active sessions",
    "logs": "Flushing logs",
    "connections": "Closing connections",
}


def format_step(step: StepResult, width: int = 40) -> str:
    dots = "." * max(3, width - len(step.label))
    line = f"{step.label} {dots} {step.status:<9} {step.duration:5.2f} s"
    if step.detail:
        line += f"  ({step.detail})"
    return line


GROUP_INDENT = "  "


def format_steps(report: Report) -> list[str]:
    """The step lines as `manage.py stop` prints them while they come: a shutdown's under the
    heading of their group (repeated if the configured order interleaves groups)."""
    # One column for the statuses, past the longest label (a count can lengthen any of them).
    width = max([40, *(len(GROUP_INDENT + step.label) + 3 for step in report.steps)])
    if report.kind != "shutdown":
        return [format_step(step, width=width) for step in report.steps]
    lines, group = [], None
    for step in report.steps:
        if step.group != group:
            group = step.group
            lines.append(SHUTDOWN_GROUPS.get(group, group.capitalize() or "Other steps") + ":")
        lines.append(GROUP_INDENT + format_step(step, width=width - len(GROUP_INDENT)))
    return lines


def format_lost(report: Report) -> str:
    """What the shutdown gave up: 0, or how many of which kind."""
    lost: dict[str, int] = {}
    for step in report.steps:
        if step.lost:
            kind = step.loses or step.name
            lost[kind] = lost.get(kind, 0) + step.lost
    if not lost:
        return "Lost: 0"
    return "Lost: " + ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in lost.items())


def format_summary(report: Report) -> list[str]:
    """The lines after the steps: what was lost (a shutdown's) and the outcome."""
    what = "Stopped" if report.kind == "shutdown" else "Recovered"
    budget = f" of a {report.budget:g} s budget" if report.budget else ""
    tail = "; nothing left in memory." if report.ok else "; NOT clean: see the steps above."
    if report.budget and report.duration > report.budget:
        tail = "; budget EXCEEDED."
    summary = f"{what} in {report.duration:.2f} s{budget}{tail}"
    return [format_lost(report), summary] if report.kind == "shutdown" else [summary]


def format_report(report: Report) -> list[str]:
    """The report as `manage.py stop` prints it: the steps, then what was lost and the outcome."""
    return format_steps(report) + format_summary(report)
