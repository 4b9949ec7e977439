"""The sessions' part of a recovery pass (LIFECYCLE_RECOVERY_STEPS)."""

from lifecycle.steps import Step


class CountSessions(Step):
    """Nothing to recover (sessions live in Redis, not in any instance): count what is reachable."""

    name = "count_sessions"
    label = "Counting reachable sessions ({count})"
    bookkeeping = True

    def run(self, *, deadline: float) -> int:
        from lifecycle.sessions.manager import session_manager
        from lifecycle.sessions.metrics import SESSIONS_ACTIVE

        count = session_manager.count_reachable(deadline=deadline)
        SESSIONS_ACTIVE.set(count)
        return count
