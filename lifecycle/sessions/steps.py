"""The sessions' part of shutdown and recovery (LIFECYCLE_SHUTDOWN_STEPS, LIFECYCLE_RECOVERY_STEPS)."""

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


class ReportActiveSessions(Step):
    """Nothing to persist at shutdown: every session change is in Redis before its response
    leaves. The step says so in the report, with how many sessions are active there."""

    name = "persist_sessions"
    label = "Sessions already in Redis ({count} active)"
    group = "sessions"
    detail = "nothing left to persist"

    def run(self, *, deadline: float) -> int:
        from lifecycle.sessions.manager import session_manager

        return session_manager.count_reachable(deadline=deadline)
