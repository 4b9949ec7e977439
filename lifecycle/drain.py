"""The draining flag shared by a gunicorn master and its workers.

A file, not process memory: the master sets it on SIGTERM and every worker (and
`manage.py drain` from a preStop hook) sees it at once, with one stat() per readiness probe.
"""

import argparse
import os
import sys
import threading
import time
from pathlib import Path

DRAIN_FLAG_ENV = "OMK_DRAIN_FLAG"
# Set by the gunicorn master: the file its first worker creates once startup recovery is done.
RECOVERED_FLAG_ENV = "OMK_RECOVERED_FLAG"


def drain_flag_path() -> Path | None:
    path = os.environ.get(DRAIN_FLAG_ENV)
    return Path(path) if path else None


def is_draining() -> bool:
    path = drain_flag_path()
    return path is not None and path.exists()


def mark_draining(path: Path | None = None) -> None:
    path = path or drain_flag_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # The time the drain began: a preStop hook's drain counts against the same budget.
        path.write_text(repr(time.time()))


def drain_started_at(path: Path | None = None) -> float | None:
    """When the drain began (time.time()), or None if the instance is not draining."""
    path = path or drain_flag_path()
    if path is None:
        return None
    try:
        return float(path.read_text() or path.stat().st_mtime)
    except (OSError, ValueError):
        return None


def clear_draining(path: Path | None = None) -> None:
    path = path or drain_flag_path()
    if path is not None:
        path.unlink(missing_ok=True)


def recovered_flag_path() -> Path | None:
    path = os.environ.get(RECOVERED_FLAG_ENV)
    return Path(path) if path else None


def is_recovered() -> bool:
    """True once startup recovery is done; always True outside a gunicorn instance."""
    path = recovered_flag_path()
    return path is None or path.exists()


# Set by `manage.py drain` once it recorded the draining state.
states_recorded = threading.Event()


def drain_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `manage.py drain`, which `drain_before_setup` reads too."""
    parser.add_argument("--pid", type=int, help="only the instance with this master pid")
    parser.add_argument("--no-wait", action="store_true", help="do not wait the drain delay")


def drain_before_setup(args: list[str]) -> None:
    """Turn readiness to 503 for the web instances `manage.py drain ARGS` drains, before Django is
    set up (manage.py calls this first). The setup imports the whole project: a second of CPU, and
    several seconds on a loaded node, that would otherwise pass before the load balancers are
    told and come out of the preStop hook's bound. The command then does the rest (the recorded
    state, the drain delay counted from these flags); any error is left for it to report.

    And the hook lasts the drain delay, however long the setup takes: the process ends when the
    delay is over (exit 0: the instances were 503 for the whole of it), should the command still
    be setting up or recording then. The draining state is then recorded by the instance's own
    shutdown (lifecycle.shutdown.shutdown_finish), at the time in the flag."""
    # No abbreviations: an ambiguous one would be an error printed here (the command itself
    # takes them; a drain written so is done by the command alone, only later).
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    drain_arguments(parser)
    # The options Django gives every command; anything else (--help, a typo) is the command's to
    # answer, with no instance drained.
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        parser.add_argument(flag, action="store_true")
    for names in (("--settings",), ("--pythonpath",), ("-v", "--verbosity")):
        parser.add_argument(*names)
    try:
        options, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError:
        return
    if unknown:
        return
    from core.conf import CoreSettings
    from lifecycle.local_instances import local_instances

    # As omk/gunicorn.conf.py finds it, without Django's settings.
    directory = Path(os.environ.get("OMK_RUN_DIR") or CoreSettings.RUN_DIR)
    marked = []
    for instance in local_instances(directory):
        if instance.kind == "web" and (options.pid is None or instance.pid == options.pid):
            mark_draining(instance.drain_flag)
            marked.append(drain_started_at(instance.drain_flag) or time.time())
    if marked and not options.no_wait:
        _end_with_the_delay(since=max(marked))


def _end_with_the_delay(*, since: float) -> None:
    from lifecycle.platform import default_drain_delay, detect_platform

    # As settings/base.py reads it (LIFECYCLE_DRAIN_DELAY from DRAIN_DELAY), else the platform's.
    raw = os.environ.get("DRAIN_DELAY")
    try:
        delay = float(raw) if raw else default_drain_delay(detect_platform())
    except ValueError:
        return  # the command says what is wrong with it
    if delay <= 0:
        return

    def end() -> None:
        time.sleep(max(0.0, since + delay - time.time()))
        if not states_recorded.is_set():
            sys.stderr.write(
                f"Readiness 503 for {delay:g} s: the drain delay is over. The draining state was not "
                "recorded yet; the instance's shutdown records it.\n"
            )
        # Also when the command is done: its interpreter's teardown (Django's, the pools') would
        # take a second more on a loaded node, for nothing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=end, name="drain-delay", daemon=True).start()
