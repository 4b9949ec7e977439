"""Everything a run observed: operations (with each HTTP attempt), events, and periodic samples.

Times are seconds since the run started (monotonic), so the checker can line up a failed attempt
with the kill, drain or restart that was happening at that moment.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Outcomes of an operation (one logical user action, possibly several HTTP attempts).
ACKED = "acked"  # a 2xx: the service promised the write; the checker must find it exactly once
REJECTED = "rejected"  # an expected, definitive refusal (409 sold out, 403 no stake...): nothing written
UNEXPECTED = "unexpected"  # a response the flow did not expect (500, 401 after login, 400 on valid input)
ABANDONED = "abandoned"  # every retry failed within the operation's deadline


@dataclass
class Attempt:
    id: str
    t0: float
    t1: float = 0.0
    status: int | None = None
    error: str | None = None
    server: str | None = None  # filled from HAProxy's log after the run
    termination: str | None = None
    cause: str | None = None  # filled by the checker for failed attempts
    dependency: str | None = None  # what a 503 named as unavailable ("redis", "database")

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 500)


@dataclass
class Op:
    id: str
    flow: str
    kind: str
    t0: float
    data: dict[str, Any] = field(default_factory=dict)
    t1: float = 0.0
    outcome: str = ""
    status: int | None = None
    body: Any = None
    attempts: list[Attempt] = field(default_factory=list)
    write: bool = True


@dataclass
class Event:
    t: float
    kind: str
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Recorder:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.ops: list[Op] = []
        self.events: list[Event] = []
        self.samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def now(self) -> float:
        return time.monotonic() - self.start

    def new_op(self, flow: str, kind: str, data: dict[str, Any] | None = None, *, write: bool = True) -> Op:
        op = Op(id=f"op{next(self._ids)}", flow=flow, kind=kind, t0=self.now(), data=dict(data or {}), write=write)
        with self._lock:
            self.ops.append(op)
        return op

    def event(self, kind: str, target: str = "", **detail: Any) -> Event:
        event = Event(t=self.now(), kind=kind, target=target, detail=detail)
        with self._lock:
            self.events.append(event)
        return event

    def sample(self, **values: Any) -> None:
        with self._lock:
            self.samples.append({"t": self.now(), **values})

    def snapshot(self) -> tuple[list[Op], list[Event]]:
        with self._lock:
            return list(self.ops), list(self.events)

    def counts(self) -> dict[str, int]:
        ops, events = self.snapshot()
        acked = sum(1 for op in ops if op.outcome == ACKED and op.write)
        failed = sum(1 for op in ops for a in op.attempts if a.failed)
        faults = sum(1 for e in events if e.kind in FAULT_KINDS)
        return {"acked": acked, "failed_attempts": failed, "faults": faults}


FAULT_KINDS = {
    "sigkill_web",
    "sigkill_worker",
    "pause",
    "redis_restart",
    "postgres_restart",
    "postgres_failover",
    "redis_failover",
    "partition",
    "latency",
}
