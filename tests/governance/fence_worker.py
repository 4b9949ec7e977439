"""A separate instance's process that executes a proposal under its lock, driven by
tests/governance/test_fencing.py (python -m tests.governance.fence_worker PROPOSAL_ID USERNAME TTL).

It acquires `proposal:<pk>`, prints {"fence"}, waits for a line on stdin (the test SIGSTOPs it
meanwhile), then executes with its fence and leaves the block; prints {"write", "release"}.
"""

from __future__ import annotations

import json
import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
    django.setup()
    from django.contrib.auth import get_user_model

    from core.errors import ServiceError
    from governance import services
    from lifecycle.locks import LockLost, distributed_lock

    proposal_id, username, ttl = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    actor = get_user_model().objects.get(username=username)
    result: dict[str, object] = {}
    try:
        with distributed_lock.acquire(services.proposal_lock_name(proposal_id), ttl=ttl, timeout=5) as lease:
            print(json.dumps({"fence": lease.fence}), flush=True)
            sys.stdin.readline()
            try:
                services.proposal_execute(actor=actor, proposal_id=proposal_id, fence=lease.fence)
                result["write"] = "executed"
            except ServiceError as exc:
                result["write"] = exc.code
    except LockLost as exc:
        result["release"] = f"LockLost: {exc}"
    else:
        result["release"] = "ok"
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
