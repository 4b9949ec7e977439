"""Waking a job worker that scales to zero (Cloud Run with request-based CPU).

Where the worker is always on (GKE, `make run`), nothing here runs: `LIFECYCLE_WAKE_URL` is
empty. Where it is not, three parts:

- A web request that created background work calls `work_created()`: a deferred job (a Queen
  reply) is urgent, an analytics event (every domain write records one) is not. Once its
  transaction committed and its response is built, `WakeWorkerMiddleware` sends a wake-up: for
  urgent work the pending mark is set in Redis, and unless a wake-up went out within
  `WAKE_DEBOUNCE` seconds (events alone: `WAKE_EVENT_DEBOUNCE`), a POST to the worker's
  `/internal/wake`. It is best effort: any failure is logged and counted, never the user's error.
- The worker service answers that POST (`wake_view`) by running `manage.py worker --until-empty`
  (lifecycle.worker) and answering when it exits: Cloud Run gives the instance CPU for exactly
  that long, then none.
- The drain takes the pending mark at each round and, before it exits, drops the debounce key and
  looks at the mark once more: work created while it ran is either seen by it or wakes a new one.

A lost wake-up (the worker unreachable, the request cut off, Redis down) loses no work: the work
is in PostgreSQL, and the scheduled drain (Cloud Scheduler, docs/deployment.md) runs it.
"""

from __future__ import annotations

import contextvars
import fcntl
import hmac
import http.client
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from redis import Redis
from redis.exceptions import RedisError

from lifecycle.conf import lifecycle_settings

logger = logging.getLogger(__name__)

# Set by a web request that created work, taken by each drain round. Expires: a mark nobody took
# (no worker ran for an hour) only means the scheduled drain runs what it stood for.
PENDING_KEY = "omk:lifecycle:wake:pending"
PENDING_TTL = 3600
# Present while a wake-up is recent: further work within WAKE_DEBOUNCE sends none.
DEBOUNCE_KEY = "omk:lifecycle:wake:sent"
# The same for analytics events alone, over WAKE_EVENT_DEBOUNCE: they need no prompt export, and
# a steady trickle of them must not keep a worker running (nor open BigQuery streams every second).
EVENT_DEBOUNCE_KEY = "omk:lifecycle:wake:sent-for-events"
TOKEN_HEADER = "X-OMK-Wake-Token"
WAKE_PATH = "/internal/wake"
# An environment variable the drain's process must not inherit from the gunicorn worker that
# starts it: it would register under the web instance's id.
_NOT_INHERITED = ("OMK_INSTANCE_ID",)

# Per request: [a job was created, an analytics event was created].
_created: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("omk_work_created", default=None)


def work_created(*, urgent: bool = True) -> None:
    """Say that the current request created background work, once its transaction commits.

    `urgent`: a job someone waits for (a Queen reply); else an analytics event, exported by the
    next drain, woken for it at most once per WAKE_EVENT_DEBOUNCE.
    """
    holder = _created.get()
    if holder is None:
        return  # not in a request: a job, the start-up or shutdown of an instance

    def note() -> None:
        holder[0 if urgent else 1] = True

    transaction.on_commit(note)


# --- The web side: sending a wake-up ------------------------------------------------------------


class WakeFailed(Exception):
    pass


class WakeBackend:
    """Sends one wake-up to the worker. `wake` returns once the worker has the request (or raises
    WakeFailed) and must not wait for the drain itself: it runs in the user's request."""

    def wake(self) -> None:
        raise NotImplementedError

    async def awake(self) -> None:
        await sync_to_async(self.wake, thread_sensitive=False)()


class HttpWake(WakeBackend):
    """A plain POST to `WAKE_URL`, authenticated by the shared `WAKE_TOKEN` and, with
    `WAKE_AUDIENCE`, by an ID token from the metadata server (Cloud Run IAM on the worker).

    The request is connected and sent within the caller's request (CPU is allocated then), and
    the response, which comes when the drain ends, is awaited by a daemon thread: holding the
    connection open needs no CPU, and the worker's request must not look abandoned by its client.
    """

    def wake(self) -> None:
        url = urllib.parse.urlsplit(lifecycle_settings.WAKE_URL)
        timeout = lifecycle_settings.WAKE_TIMEOUT
        headers = {TOKEN_HEADER: lifecycle_settings.WAKE_TOKEN, "Content-Length": "0"}
        if lifecycle_settings.WAKE_AUDIENCE:
            headers["Authorization"] = f"Bearer {id_token(lifecycle_settings.WAKE_AUDIENCE, timeout=timeout)}"
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(url.netloc, timeout=timeout)
        try:
            connection.request("POST", url.path or WAKE_PATH, body=b"", headers=headers)
        except OSError as exc:
            connection.close()
            raise WakeFailed(f"{url.netloc}: {exc!r}") from exc
        threading.Thread(target=_await_drain, args=(connection,), name="wake response", daemon=True).start()


def _await_drain(connection: http.client.HTTPConnection) -> None:
    if connection.sock is not None:
        connection.sock.settimeout(lifecycle_settings.DRAIN_MAX_SECONDS + 60)
    try:
        response = connection.getresponse()
        logger.info("Worker woken: %s %s", response.status, response.read(500).decode(errors="replace"))
    except OSError as exc:
        logger.info("Wake-up answered no response: %r (the scheduled drain covers it)", exc)
    finally:
        connection.close()


_token_cache: dict[str, tuple[str, float]] = {}
_token_lock = threading.Lock()


def id_token(audience: str, *, timeout: float) -> str:
    """An ID token for `audience` from the metadata server, reused for 50 of its 60 minutes."""
    with _token_lock:
        cached = _token_cache.get(audience)
        if cached and cached[1] > time.monotonic():
            return cached[0]
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    query = urllib.parse.urlencode({"audience": audience})
    request = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/instance/service-accounts/default/identity?{query}",
        headers={"Metadata-Flavor": "Google"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            token = response.read().decode()
    except OSError as exc:
        raise WakeFailed(f"no ID token from the metadata server: {exc!r}") from exc
    with _token_lock:
        _token_cache[audience] = (token, time.monotonic() + 50 * 60)
    return token


def wake_backend() -> WakeBackend:
    return import_string(lifecycle_settings.WAKE_BACKEND)()


def wake_worker(client: Redis | None = None, *, urgent: bool = True) -> str:
    """Wake the worker unless a wake-up went out within the debounce; for `urgent` work (jobs)
    also set the pending mark, which keeps a running drain going for another round.

    Returns the outcome (`sent`, `debounced`, `failed`, `off`); never raises.
    """
    from lifecycle.metrics import WORKER_WAKEUPS

    if not lifecycle_settings.WAKE_URL:
        return "off"
    key, debounce = (
        (DEBOUNCE_KEY, lifecycle_settings.WAKE_DEBOUNCE)
        if urgent
        else (EVENT_DEBOUNCE_KEY, lifecycle_settings.WAKE_EVENT_DEBOUNCE)
    )
    try:
        from core.redis import redis_client

        client = client or redis_client()
        with client.pipeline(transaction=False) as pipe:
            if urgent:
                pipe.set(PENDING_KEY, "1", ex=PENDING_TTL)
            pipe.set(key, "1", nx=True, px=max(1, int(debounce * 1000)))
            first = pipe.execute()[-1]
        if not first:
            outcome = "debounced"
        else:
            try:
                wake_backend().wake()
                outcome = "sent"
            except Exception:
                # The next request with work tries again rather than waiting out the debounce.
                client.delete(key)
                raise
    except Exception as exc:
        logger.warning("Could not wake the worker (the scheduled drain will run the work): %r", exc)
        outcome = "failed"
    WORKER_WAKEUPS.labels(outcome=outcome).inc()
    return outcome


class WakeWorkerMiddleware:
    """After a request that created work (and committed it), wake the worker. Sync only: the
    service's views are sync, and the wake-up's connect and send take milliseconds."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not lifecycle_settings.WAKE_URL:
            return self.get_response(request)
        holder = [False, False]
        token = _created.set(holder)
        try:
            response = self.get_response(request)
        finally:
            _created.reset(token)
        if holder[0] or holder[1]:
            wake_worker(urgent=holder[0])
        return response


# --- The drain's side: the pending mark -------------------------------------------------------


def wake_pending_take(client: Redis) -> bool:
    """Take the pending mark (at the start of a drain round): True if work was announced.

    Redis out of reach: False. The mark only saves a round's wait; the work is in PostgreSQL."""
    try:
        return client.getdel(PENDING_KEY) is not None
    except RedisError as exc:
        logger.warning("Pending mark unreadable: %r", exc)
        return False


def wake_pending_after_release(client: Redis) -> bool:
    """The drain found nothing to do and is about to exit. Drop the debounce key first, then look
    at the mark: work committed after this look finds no debounce key and sends a new wake-up;
    work committed before it left the mark, and the drain does one more round."""
    try:
        client.delete(DEBOUNCE_KEY)
        return client.exists(PENDING_KEY) > 0
    except RedisError as exc:
        # Wake-ups then fail too (they need Redis): the scheduled drain takes what comes next.
        logger.warning("Could not release the wake-up debounce: %r", exc)
        return False


# --- The worker service's side: serving a wake-up ---------------------------------------------


def _drain_command() -> list[str]:
    from django.conf import settings

    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "worker", "--until-empty"]


def wake_serve() -> dict:
    """Run one drain in a process of its own and wait for it; one at a time per instance (a
    wake-up that arrives meanwhile waits, then drains what came in since)."""
    from lifecycle.shutdown import run_dir

    lock_path = run_dir() / "wake.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    started = time.monotonic()
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        try:
            process = subprocess.run(_drain_command(), env=env, timeout=lifecycle_settings.DRAIN_MAX_SECONDS + 30)
            code = process.returncode
        except subprocess.TimeoutExpired:
            code = -9
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return {"exit_code": code, "waited": round(waited, 3), "seconds": round(time.monotonic() - started, 3)}


def wake_view(request: HttpRequest) -> HttpResponse:
    """POST /internal/wake on the worker service (answered ahead of hosts, sessions and CSRF,
    like the probes): run the drain, answer when the queue is empty."""
    expected = lifecycle_settings.WAKE_TOKEN
    if not lifecycle_settings.WAKE_SERVE:
        return JsonResponse({"error": "not_found"}, status=404)
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed", "detail": "POST only"}, status=405)
    given = request.headers.get(TOKEN_HEADER, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return JsonResponse({"error": "forbidden", "detail": f"{TOKEN_HEADER} missing or wrong"}, status=403)
    result = wake_serve()
    return JsonResponse(result, status=200 if result["exit_code"] == 0 else 500, json_dumps_params={"indent": None})


__all__ = [
    "HttpWake",
    "WakeBackend",
    "WakeWorkerMiddleware",
    "wake_pending_after_release",
    "wake_pending_take",
    "wake_view",
    "wake_worker",
    "work_created",
]
