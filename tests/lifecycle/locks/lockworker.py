"""A separate process that uses the lock, driven by the tests (python -m tests.lifecycle.locks.lockworker).

Commands (argv[1]):
  counter NAME KEY N   N times: under the lock, a non-atomic read-modify-write of KEY; prints
                       one JSON line per grant {"fence", "seen", "wait"} and then "done".
  hold NAME TTL        acquire, print {"fence", "token"} and sleep until killed.
  stale NAME TTL       acquire, print {"fence"}, wait for a line on stdin (the test SIGSTOPs us
                       meanwhile), then try a fenced write of the resource and leave the block;
                       prints {"write": ..., "release": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django


def emit(**data: object) -> None:
    print(json.dumps(data), flush=True)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
    django.setup()
    from core.redis import redis_client
    from lifecycle.locks import LockLost, distributed_lock
    from tests.lifecycle.locks.fenced import fenced_write

    command, name = sys.argv[1], sys.argv[2]
    client = redis_client()
    if command == "counter":
        key, n = sys.argv[3], int(sys.argv[4])
        for _ in range(n):
            start = time.monotonic()
            with distributed_lock.acquire(name, ttl=10, timeout=30) as lease:
                wait = time.monotonic() - start
                seen = int(client.get(key) or 0)
                time.sleep(0.001)  # widen the window a missing lock would let another process into
                client.set(key, seen + 1)
            emit(fence=lease.fence, seen=seen, wait=wait)
        emit(done=True)
    elif command == "hold":
        with distributed_lock.acquire(name, ttl=float(sys.argv[3]), timeout=5) as lease:
            emit(fence=lease.fence, token=lease.token)
            time.sleep(3600)
    elif command == "stale":
        result: dict[str, object] = {}
        try:
            with distributed_lock.acquire(name, ttl=float(sys.argv[3]), timeout=5) as lease:
                emit(fence=lease.fence)
                sys.stdin.readline()
                result["write"] = "accepted" if fenced_write(client, name, lease.fence, "A") else "refused"
        except LockLost as exc:
            result["release"] = f"LockLost: {exc}"
        else:
            result["release"] = "ok"
        emit(**result)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
