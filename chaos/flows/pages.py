"""Reads every deployment has (the foundation's home page): keeps traffic flowing through
scale-ins and kills even before any API exists, so failed requests are measured from the start."""

from __future__ import annotations

import random

from chaos.flows.base import CheckResult, Flow, User
from chaos.recorder import ACKED, REJECTED


class PagesFlow(Flow):
    name = "pages"
    requires = ()
    weight = 0.5

    def user_step(self, user: User, rng: random.Random) -> bool:
        user.api.call(self.name, "home", "GET", "/", write=False, ok=(200, 302))
        return True

    def check(self) -> CheckResult:
        result = CheckResult()
        ops = self.ops()
        result.details = {
            "reads": len(ops),
            "ok": sum(1 for op in ops if op.outcome == ACKED),
            "refused": sum(1 for op in ops if op.outcome == REJECTED),
        }
        return result
