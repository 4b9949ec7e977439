"""Instance registry: who is alive (Redis heartbeats) and what happened (PostgreSQL history).

The heartbeat part is plain redis-py with no Django import, because the gunicorn master runs it
before and while it forks workers and must not hold Django's connection pools.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "omk:lifecycle:instance:{}"
# The generation of the beat stored under HEARTBEAT_KEY (requests ended when it was taken).
GENERATION_KEY = "omk:lifecycle:instance-generation:{}"
INSTANCE_ID_ENV = "OMK_INSTANCE_ID"


def new_instance_id(kind: str) -> str:
    host = socket.gethostname().split(".")[0][:40]
    return f"{kind}-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def instance_version() -> str:
    # Cloud Run names the revision; a build sets OMK_VERSION.
    return os.environ.get("OMK_VERSION") or os.environ.get("K_REVISION") or "dev"


def heartbeat_key(instance_id: str) -> str:
    return HEARTBEAT_KEY.format(instance_id)


# A beat taken before a later one was stored must not replace it: the gunicorn master's beat
# (taken while a request ran, so short-lived) may reach Redis after the idle beat the request
# wrote as it ended, and would leave an idle instance to expire and be counted lost.
_WRITE_UNLESS_NEWER = """
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[3]) < stored then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"""


def heartbeat_write(client: Redis, *, instance_id: str, state: str, ttl: float, generation: int | None = None) -> bool:
    """Write the beat; with a `generation`, only if no beat of a later generation is stored."""
    if generation is None:
        client.set(heartbeat_key(instance_id), state, px=int(ttl * 1000))
        return True
    keys = [heartbeat_key(instance_id), GENERATION_KEY.format(instance_id)]
    return bool(client.eval(_WRITE_UNLESS_NEWER, 2, *keys, state, int(ttl * 1000), generation))


def heartbeat_delete(client: Redis, *, instance_id: str) -> None:
    client.delete(heartbeat_key(instance_id), GENERATION_KEY.format(instance_id))


# (ttl, generation) of the next beat: how long it lasts and the requests ended when it was taken.
Lease = Callable[[], tuple[float, int | None]]


class Heartbeat:
    """A daemon thread that writes the instance's heartbeat (and current state) every interval.

    A Redis outage is logged and retried at the next beat: the instance keeps serving, and if the
    outage outlasts the TTL other instances may count it lost, which only makes them retry work
    that must be idempotent anyway.
    """

    def __init__(
        self,
        *,
        client: Redis,
        instance_id: str,
        state: Callable[[], str],
        interval: float,
        ttl: float,
        lease: Lease | None = None,
    ):
        self.client = client
        # Without a lease, every beat lasts `ttl` (CPU always allocated); with one, the lease says
        # (request-based CPU: longer while idle, see lifecycle_settings.IDLE_HEARTBEAT_TTL).
        self.lease = lease
        self.instance_id = instance_id
        self.state = state
        self.interval = interval
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # time.monotonic() of the last beat begun (the thread is alive) and of the last one that
        # reached Redis (others can see this instance), for the worker's probes.
        self.last_attempt = time.monotonic()
        self.last_written: float | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def beat(self) -> None:
        self.last_attempt = time.monotonic()
        ttl, generation = self.lease() if self.lease is not None else (self.ttl, None)
        try:
            heartbeat_write(
                self.client, instance_id=self.instance_id, state=self.state(), ttl=ttl, generation=generation
            )
        except RedisError as exc:
            logger.warning("Instance heartbeat failed: %r", exc)
        else:
            self.last_written = time.monotonic()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="lifecycle-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self, *, clear: bool = True) -> None:
        """Stop beating; with `clear`, remove the key (a clean stop, never counted lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if clear:
            try:
                heartbeat_delete(self.client, instance_id=self.instance_id)
            except RedisError as exc:
                logger.warning("Could not clear the instance heartbeat: %r", exc)
