"""Log-in sessions live in Redis only: they must survive the Redis restart (AOF, fsync always)
and be readable through any instance."""

from __future__ import annotations

import random

from chaos.flows.base import CheckResult, Flow, User, body_field
from chaos.recorder import ACKED


class SessionFlow(Flow):
    name = "sessions"
    requires = ("POST /api/auth/login", "GET /api/auth/me")
    weight = 0.3

    def user_step(self, user: User, rng: random.Random) -> bool:
        if not user.state.get("session"):
            return False
        user.api.call(self.name, "me", "GET", "/api/auth/me", write=False)
        return True

    def check(self) -> CheckResult:
        result = CheckResult()
        session_users = [u for u in self.run.users + self.run.staff if u.state.get("session")]
        lost = 0
        for user in session_users:
            op = user.api.call(self.name, "me_final", "GET", "/api/auth/me", write=False)
            if op.outcome != ACKED or body_field(op.body, "username") != user.name:
                lost += 1
                result.violate(f"session of {user.name} lost: {op.status} {str(op.body)[:120]}")
        result.lost = lost
        result.details = {
            "session_users": len(session_users),
            "sessions_lost": lost,
            "reads_ok": sum(1 for op in self.ops("me") if op.outcome == ACKED),
        }
        return result
