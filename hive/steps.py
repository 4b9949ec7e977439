"""The hive's shutdown step: the shutdown report counts the replies a stopping worker handed back."""

from __future__ import annotations

import threading

from lifecycle.steps import Step

_handed_back = {"count": 0}
_lock = threading.Lock()


def reply_handed_back() -> None:
    """Note a reply whose generation this process cancelled and gave back (a retry due now)."""
    with _lock:
        _handed_back["count"] += 1


class HandBackReplies(Step):
    """Counts the replies this process's reply jobs handed back when the worker began to stop:
    each stopped its LLM call and went back to `todo` at once (another worker generates it)."""

    name = "hand_back_replies"
    label = "Handing back replies in generation ({count})"
    flushes = "reply"

    def run(self, *, deadline: float) -> int:
        with _lock:
            return _handed_back["count"]
