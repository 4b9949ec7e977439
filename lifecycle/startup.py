"""Startup of a web instance: register, recover, then let readiness turn 200.

The gunicorn master must not use Django's database pool (its workers would inherit it). Right
after django.setup() it forks a process of its own for this work (start_web_startup_process),
and goes on importing the request path and forking its workers meanwhile: the recovery, a chain
of round trips to PostgreSQL and Redis, overlaps that CPU work instead of following it. Where
there is no such process (it died, or the Cloud Run functions entry point runs web_startup
itself), the first worker to boot does the work in a background thread. `/ready` answers 503
(RecoveredCheck) until the recovered flag file exists.
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
    """True in exactly one process of the instance (the master's startup process, or the first
    worker to boot without one), until it is done."""
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
    """The master calls this when a worker or its startup process exits: a lead that died
    mid-recovery is released."""
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
                # Back to the pool: the recovery steps run in threads of their own, and the first
                # takes this connection instead of waiting for the pool to open another.
                connections_close(pools=False, redis=False)
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
        if master_pid not in (os.getpid(), os.getppid()):
            # The master is gone (SIGKILLed, say): nothing is left to turn ready.
            logger.warning("Startup recovery abandoned: the instance's master %d is gone", master_pid)
            return
    if flag is not None:
        flag.touch()
    logger.info("Instance %s ready", instance_id)


def start_web_startup_process(*, master_pid: int) -> int | None:
    """In the gunicorn master: fork the process that runs web_startup; its pid, or None when
    another process of the instance leads the startup already.

    The master holds no connection and runs no thread of its own before its first fork, so the
    child inherits neither; it opens its connections under its own name, closes them and exits
    once the recovered flag is raised (retrying meanwhile while a dependency is down, as
    web_startup does). What it imports is imported here first, for the workers to share.
    """
    from lifecycle.warmup import preload_startup

    if not claim_startup_lead():
        return None
    preload_startup()
    pid = os.fork()
    if pid:
        flag = recovered_flag_path()
        if flag is not None:
            recovery_lock_path(flag).write_text(str(pid))
        return pid
    code = 1
    try:
        from core.connections import connections_close, connections_name
        from lifecycle.warmup import collection_resume

        # Collection was paused for the master's imports; resumed as in the master before its
        # workers fork (a first pass over everything imported would take tens of milliseconds).
        collection_resume()

        connections_name(pid=os.getpid())
        web_startup(master_pid=master_pid)
        connections_close(pools=True, redis=True)
        code = 0
    finally:
        logging.shutdown()
        # No interpreter teardown: atexit handlers and modules are the master's.
        os._exit(code)


def start_web_startup_thread(*, master_pid: int) -> threading.Thread | None:
    if not claim_startup_lead():
        return None
    thread = threading.Thread(
        target=web_startup, kwargs={"master_pid": master_pid}, name="lifecycle-startup", daemon=True
    )
    thread.start()
    return thread


def worker_pools_open() -> None:
    """In a worker as it boots: start its database pool filling in the background.

    Its first request (the platform's readiness probe, as soon as the lead's recovery is done)
    then takes a connection already open instead of opening one; psycopg_pool connects in its own
    threads, retrying as it does for every connection, so a PostgreSQL that is down delays
    nothing here.
    """
    from django.db import connections

    for connection in connections.all():
        pool = getattr(connection, "pool", None)
        if pool is not None:
            pool.open(wait=False)
