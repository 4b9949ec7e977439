"""Procrastinate tasks of the hive (autodiscovered): generating the Queen's replies."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import close_old_connections
from procrastinate import RetryDecision
from procrastinate.contrib.django import app
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy

from hive.conf import queen_settings
from hive.llm import LLMBackend, LLMCancelled, LLMError, llm_backend
from hive.metrics import (
    replies_failed,
    replies_generated,
    replies_handed_back,
    replies_retried,
    reply_generation_seconds,
)
from hive.steps import reply_handed_back

logger = logging.getLogger(__name__)


class RetryReply(Exception):
    """Run the job again after `retry_in` seconds (0: at once, on any worker)."""

    def __init__(self, message: str, *, retry_in: float):
        super().__init__(message)
        self.retry_in = retry_in


class ReplyRetryStrategy(BaseRetryStrategy):
    """RetryReply says when; any other error (PostgreSQL or Redis out of reach) is retried with
    a capped exponential backoff. The reply's own attempts, not the job's, decide when a reply
    has failed: a handed-back job spends none."""

    MAX_JOB_ATTEMPTS = 30

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryReply):
            return RetryDecision(retry_at=_in(exception.retry_in))
        if job.attempts >= self.MAX_JOB_ATTEMPTS:
            return None
        return RetryDecision(retry_at=_in(backoff(job.attempts + 1)))


def _in(seconds: float) -> datetime:
    return datetime.now(tz=UTC) + timedelta(seconds=seconds)


def backoff(attempt: int) -> float:
    return min(queen_settings.BACKOFF_SECONDS * 2 ** max(attempt - 1, 0), queen_settings.BACKOFF_MAX_SECONDS)


def stop_event() -> threading.Event:
    """Set when this worker process is stopping (lifecycle.jobs.jobs_stopping)."""
    from lifecycle.jobs import jobs_stopping

    return jobs_stopping()


def _call(backend: LLMBackend, history: list[dict[str, Any]], *, deadline: float, stopping: threading.Event) -> str:
    """Run the backend's call in a thread of its own, so that a stopping worker stops waiting for
    it at once (and cancels it) whatever the backend does with the cancellation."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            result["text"] = backend.generate(history, deadline=deadline)
        except BaseException as exc:
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="queen llm call", daemon=True).start()
    while not done.wait(0.05):
        if stopping.is_set():
            backend.cancel()
            raise LLMCancelled("the worker is stopping")
        if time.monotonic() > deadline + 1.0:
            backend.cancel()
            raise LLMError("the call outlived its deadline")
    if "error" in result:
        raise result["error"]
    return result["text"]


@app.task(name="hive.generate_reply", retry=ReplyRetryStrategy(), pass_context=False)
def generate_reply(*, reply_id: int) -> str:
    from hive import selectors, services

    try:
        reply = selectors.reply_pending(reply_id=reply_id)
        if reply is None:
            return "not pending"
        stopping = stop_event()
        started = time.monotonic()
        try:
            if stopping.is_set():
                raise LLMCancelled("the worker is stopping")
            history = selectors.reply_history(reply=reply)
            content = _call(
                llm_backend(), history, deadline=started + queen_settings.GENERATION_TIMEOUT, stopping=stopping
            )
        except LLMCancelled:
            # Another worker takes it now; no attempt spent.
            reply_handed_back()
            replies_handed_back.inc()
            logger.warning("Reply %s handed back: the worker is stopping", reply_id)
            raise RetryReply("handed back", retry_in=0) from None
        except LLMError as exc:
            failed = services.reply_record_failure(reply_id=reply_id, error=str(exc))
            if failed is None or failed.status == failed.Status.FAILED:
                replies_failed.inc()
                logger.error("Reply %s failed for good: %s", reply_id, exc)
                return "failed"
            replies_retried.inc()
            logger.warning("Reply %s attempt %s failed, retried: %s", reply_id, failed.attempts, exc)
            raise RetryReply(str(exc), retry_in=backoff(failed.attempts)) from exc
        reply_generation_seconds.observe(time.monotonic() - started)
        _, appended = services.reply_complete(reply_id=reply_id, content=content)
        if appended:
            replies_generated.inc()
        return "done" if appended else "already there"
    finally:
        # Sync tasks run in worker threads, outside any request: give the connection back.
        close_old_connections()
