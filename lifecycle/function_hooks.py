"""An instance's life under Cloud Run functions' `functions-framework` (entry point omk/function.py).

functions-framework (3.x) imports the function's source module in its own process, builds a Flask
app around the target, then runs gunicorn in that same process (`GunicornApplication`: one worker
by default, gthread, options from the environment only). That process becomes gunicorn's master,
so no `gunicorn.conf.py` applies and no server hook can be configured. The same lifecycle as a
gunicorn web instance (lifecycle/gunicorn_hooks.py) is set up from the module's import instead:

- At import, in the future master, before the listener exists: the instance id, flags and
  metrics directory, Django, the instance file, the heartbeat, then registration and startup
  recovery, synchronously. Cloud Run sends no request before the port listens, so no request is
  served before recovery is done (and `/ready` is 200 from the first one). Every connection
  opened for it is closed before gunicorn forks its worker.
- gunicorn's arbiter, created after that import, gets the rest when it starts (`Arbiter.start` is
  wrapped for this process's one arbiter): the hooks of lifecycle/gunicorn_hooks.py that act
  after start-up (post_fork, post_worker_init, worker_exit, child_exit, on_exit), our deadline as
  its graceful_timeout, and SIGTERM (and SIGINT) handled by the same sequence as a gunicorn web
  instance: draining, the drain delay (0 on Cloud Run), finishing in-flight requests under our
  deadline, the configured steps, the report; then the master exits.

tests/lifecycle/test_function.py runs `functions-framework` for real and pins this.
"""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter

logger = logging.getLogger("lifecycle.function")


def function_instance_start(*, run_dir: Path) -> None:
    """Run once, at the import of the function's module in functions-framework's process."""
    from lifecycle import gunicorn_hooks

    gunicorn_hooks.configure_master_environment(run_dir)
    gunicorn_hooks.master_setup()
    # Its own Redis client, as in a gunicorn master (the heartbeat thread is not forked).
    gunicorn_hooks.when_ready(None)

    from core.connections import connections_close
    from lifecycle.startup import web_startup

    # Retries while PostgreSQL or Redis is unreachable: the port stays closed meanwhile, and the
    # platform's startup probe (a TCP connect) holds traffic back.
    web_startup(master_pid=os.getpid())
    # The worker is forked from this process: it must open connections and pools of its own.
    connections_close(pools=True, redis=True)
    _attach_to_gunicorn()
    logger.info("Function instance %s ready to serve", gunicorn_hooks.state.instance_id)


def _attach_to_gunicorn() -> None:
    from gunicorn.arbiter import Arbiter

    start = Arbiter.start

    def start_with_lifecycle(arbiter: Arbiter) -> None:
        _attach(arbiter)
        start(arbiter)

    # The arbiter functions-framework creates after this import runs `start` first thing in
    # `run`: its configuration gets the lifecycle's hooks there, before any worker is forked.
    # Ignored: wrapping the method is the point; the stubs type it with the instance bound.
    Arbiter.start = start_with_lifecycle  # type: ignore[method-assign,assignment]


def _attach(arbiter: Arbiter) -> None:
    from lifecycle import gunicorn_hooks
    from lifecycle.platform import detect_platform

    # The hooks omk/gunicorn.conf.py sets, but those run at import above (on_starting, when_ready).
    for hook in ("post_fork", "post_worker_init", "worker_exit", "child_exit", "on_exit"):
        arbiter.cfg.set(hook, getattr(gunicorn_hooks, hook))
    arbiter.cfg.set("graceful_timeout", int(detect_platform().shutdown_deadline))
    # Looked up on the instance at each signal, as gunicorn_hooks.on_starting sets them.
    arbiter.handle_term = types.MethodType(gunicorn_hooks.handle_term, arbiter)  # type: ignore[method-assign]  # our sequence
    arbiter.handle_int = types.MethodType(gunicorn_hooks.handle_term, arbiter)  # type: ignore[method-assign]  # Ctrl-C too
