"""What a user flow is: a pluggable piece, enabled only when the service has its endpoints.

Each flow declares the operations it needs (`"POST /api/stakes/"`, path parameters written `{}`);
the harness reads the served OpenAPI schema and enables the flows whose operations all exist, so
a run is useful with whatever is merged and gets stronger as pieces land.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.recorder import ACKED, Op

if TYPE_CHECKING:
    from chaos.run import Run


def normalize(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def schema_operations(schema: dict[str, Any]) -> set[str]:
    operations = set()
    for path, methods in (schema.get("paths") or {}).items():
        for method in methods:
            if method.lower() in ("get", "post", "put", "patch", "delete"):
                operations.add(f"{method.upper()} {normalize(path)}")
    return operations


@dataclass
class User:
    name: str
    password: str
    staff: bool = False
    api: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class CheckResult:
    """One flow's verdict. `violations` are human-readable lines; any of them fails the run."""

    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    double_executions: int = 0
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def violate(self, message: str, limit: int = 20) -> None:
        if len(self.violations) < limit:
            self.violations.append(message)
        elif len(self.violations) == limit:
            self.violations.append("... (more left out)")


class Flow:
    name = ""
    requires: tuple[str, ...] = ()
    # Relative frequency of this flow's user steps.
    weight = 1.0

    def __init__(self, run: Run):
        self.run = run
        self.lock = threading.Lock()

    def setup(self) -> None:
        """Before the clients start (the service is up): create what the flow needs."""

    def user_step(self, user: User, rng: random.Random) -> bool:
        """One user operation; False when there was nothing to do."""
        return False

    def staff_step(self, staff: User, rng: random.Random) -> bool:
        return False

    def finish(self) -> None:
        """After the load stopped and the faults ended: let queued work settle."""

    def check(self) -> CheckResult:
        return CheckResult()

    # -- helpers ------------------------------------------------------------------------------
    def ops(self, kind: str | None = None) -> list[Op]:
        ops, _ = self.run.recorder.snapshot()
        return [op for op in ops if op.flow == self.name and (kind is None or op.kind == kind)]

    def acked(self, kind: str) -> list[Op]:
        return [op for op in self.ops(kind) if op.outcome == ACKED]


def body_field(body: Any, *names: str) -> Any:
    """The first of `names` present in a JSON object response (None when absent)."""
    if isinstance(body, dict):
        for name in names:
            if name in body:
                return body[name]
    return None
