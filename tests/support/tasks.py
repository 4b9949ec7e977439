"""Jobs for the lifecycle tests (loaded by workers through PROCRASTINATE_IMPORT_PATHS)."""

import os
import time

from procrastinate.contrib.django import app

from core.redis import redis_client


@app.task(name="tests.slow_job", pass_context=True)
def slow_job(context, *, key: str, seconds: float) -> None:
    """Records each start and the completion (with the worker's pid) in Redis."""
    client = redis_client()
    client.rpush(f"{key}:started", os.getpid())
    time.sleep(seconds)
    client.rpush(f"{key}:done", os.getpid())


@app.task(name="tests.blocking_async_job")
async def blocking_async_job(*, key: str, seconds: float) -> None:
    """A bug on purpose: a blocking call inside an async job stops the worker's event loop."""
    client = redis_client()
    client.rpush(f"{key}:started", os.getpid())
    time.sleep(seconds)
    client.rpush(f"{key}:done", os.getpid())


@app.task(name="tests.slow_first_time", pass_context=False)
def slow_first_time(*, key: str, seconds: float) -> None:
    """Slow on its first run only (a test kills that one), quick when it runs again."""
    client = redis_client()
    runs = client.rpush(f"{key}:started", os.getpid())
    if runs == 1:
        time.sleep(seconds)
    client.rpush(f"{key}:done", os.getpid())
