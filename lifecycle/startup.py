"""Startup of a web instance: register, recover, then let readiness turn 200.

The gunicorn master must not use Django's database pool (its workers would inherit it), so the
first worker to boot does this work in a background thread while the others boot; `/ready`
answers 503 (RecoveredCheck) until the recovered flag file exists.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from lifecycle.drain import recovered_flag_path
from lifecycle.registry import INSTANCE_ID_ENV

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def recovery_lock_path(flag: Path) -> Path:
    return flag.with_suffix(".lead")


def claim_startup_lead() -> bool:
    """True in exactly one worker of the instance (the first to boot), until it is done."""
    flag = recovered_flag_path()
    if flag is None or flag.exists():
        return False
    try:
        fd = os.open(recovery_lock_path(flag), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release_startup_lead_of(pid: int) -> None:
    """The master calls this when a worker exits: a lead that died mid-recovery is released."""
    flag = recovered_flag_path()
    if flag is None or flag.exists():
        return
    lock = recovery_lock_path(flag)
    try:
        if int(lock.read_text() or 0) == pid:
            lock.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def web_startup(*, master_pid: int) -> None:
    """Register the instance, run recovery, mark it ready and raise the recovered flag."""
    from core.connections import connections_close
    from lifecycle.metrics import INSTANCE_STARTUP
    from lifecycle.models import InstanceState
    from lifecycle.recovery import recovery_run
    from lifecycle.services import instance_register, instance_set_state

    instance_id = os.environ[INSTANCE_ID_ENV]
    flag = recovered_flag_path()
    registered = False
    while True:
        try:
            if not registered:
                instance_register(instance_id=instance_id, kind="web", pid=master_pid)
                registered = True
                INSTANCE_STARTUP.labels(kind="web").inc()
            report = recovery_run(instance_id=instance_id, kind="web")
            # A failed step is in the report and the log; the job workers' periodic pass tries
            # again. Only an unreachable PostgreSQL or Redis (an exception here) keeps us not-ready.
            detail = "recovery done" if report.ok else "recovery done with failed steps"
            instance_set_state(instance_id=instance_id, state=InstanceState.READY, detail=detail)
            break
        except Exception as exc:
            # PostgreSQL or Redis is down: stay not-ready and try again (the probes say why).
            logger.error("Startup recovery failed: %r; retrying in %s s", exc, RETRY_SECONDS)
        finally:
            connections_close(pools=False, redis=False)
        time.sleep(RETRY_SECONDS)
    if flag is not None:
        flag.touch()
    logger.info("Instance %s ready", instance_id)


def start_web_startup_thread(*, master_pid: int) -> threading.Thread | None:
    if not claim_startup_lead():
        return None
    thread = threading.Thread(
        target=web_startup, kwargs={"master_pid": master_pid}, name="lifecycle-startup", daemon=True
    )
    thread.start()
    return thread
