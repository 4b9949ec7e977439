"""The sessions' shutdown step: it reports the sessions active in Redis (nothing to persist)."""

import time

from lifecycle.sessions.manager import session_manager
from lifecycle.sessions.steps import ReportActiveSessions
from lifecycle.steps import StepStatus, run_step


def test_report_active_sessions__counts_what_redis_holds_and_persists_nothing():
    for n in range(3):
        session_manager.create_session({"n": n})

    result = run_step(ReportActiveSessions(), deadline=time.monotonic() + 5)

    assert result.status == StepStatus.OK
    assert result.count == 3
    assert result.label == "Sessions already in Redis (3 active)"
    assert result.detail == "nothing left to persist"
    assert result.group == "sessions"
    assert session_manager.count_sessions() == 3  # read only
