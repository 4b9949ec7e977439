"""Request-path benchmark: the CPU one request costs through the service's middleware, against
bare Django's (startproject) middleware, in one process and one run.

    .venv/bin/python bench/request_path.py [--rounds 30] [--requests 100]

No server and no sockets: each stack is a Django WSGIHandler built with that MIDDLEWARE and
called with a minimal WSGI environ for the same trivial view (`/_test/slow?seconds=0`, the view
bench/lifecycle.py times), its response iterated and closed as a WSGI server does. The figure
is CPU time (time.process_time) per request, so a loaded machine, where the process waits for a
core, changes it far less than wall time; each round runs a short batch of every stack in turn,
and each stack's figure is its best batch over the rounds (the median is given beside it). Also:
the cost each middleware adds (the full stack's figure less the figure without it, one at a
time; within a few microseconds of noise, so a small negative cost is none). Runs under
settings.test with gunicorn's setting: the prometheus multiprocess mode (a temporary directory)
and the in-flight counter; the view touches neither PostgreSQL nor Redis. Both stacks resolve
the path in the service's URLconf: the figures are the middleware's alone.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The bare baseline: startproject's middleware, as bench/lifecycle.py's bare app has it.
from bench.lifecycle import STARTPROJECT_MIDDLEWARE as BARE_MIDDLEWARE  # noqa: E402

PATH, QUERY = "/_test/slow", "seconds=0"


def environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": PATH,
        "QUERY_STRING": QUERY,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def handler_with(middleware: list[str]):
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    # The chain is built once, from MIDDLEWARE as it is then; requests run after the override.
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def answers_200(handler) -> bool:
    """False for a stack that cannot serve without the middleware left out (auth needs sessions)."""
    import logging

    statuses = []
    logging.disable(logging.CRITICAL)
    try:
        result = handler(environ(), lambda status, headers, exc_info=None: statuses.append(status))
        result.close()
    finally:
        logging.disable(logging.NOTSET)
    return statuses[0].startswith("200")


def cpu_per_request(handler, requests: int) -> float:
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    started = time.process_time()
    for _ in range(requests):
        result = handler(environ(), start_response)
        for _chunk in result:
            pass
        result.close()
    elapsed = time.process_time() - started
    if any(not status.startswith("200") for status in statuses):
        raise SystemExit(f"unexpected status: {sorted(set(statuses))}")
    return elapsed / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=100, help="requests per stack and round")
    parser.add_argument("--no-each", action="store_true", help="skip the cost of each middleware")
    args = parser.parse_args()

    run_dir = tempfile.mkdtemp(prefix="omk-bench-path-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
    os.environ["LIFECYCLE_TEST_VIEWS"] = "1"
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", run_dir)
    os.environ.setdefault("OMK_RUN_DIR", run_dir)
    import django

    django.setup()
    from django.conf import settings

    from lifecycle import inflight

    inflight.create()  # as gunicorn's master does before forking: the in-flight count is real

    service = list(settings.MIDDLEWARE)
    stacks = {"bare": BARE_MIDDLEWARE, "service": service}
    if not args.no_each:
        for name in service:
            stacks[f"without {name}"] = [other for other in service if other != name]
    handlers = {label: handler_with(middleware) for label, middleware in stacks.items()}
    # A middleware others need (sessions, for auth) has no cost of its own to measure.
    required = [label for label, handler in handlers.items() if not answers_200(handler)]
    for label in required:
        del handlers[label]
    for handler in handlers.values():
        cpu_per_request(handler, 200)  # warm: the URLconf, lazy imports, the metrics' files

    # The collector's passes fall on whichever batch is running: off while timing, and what was
    # loaded is frozen as the service's gunicorn master does.
    gc.collect()
    gc.freeze()
    samples: dict[str, list[float]] = {label: [] for label in handlers}
    for _ in range(args.rounds):
        for label, handler in handlers.items():
            gc.disable()
            try:
                samples[label].append(cpu_per_request(handler, args.requests))
            finally:
                gc.enable()
            gc.collect()
    # The best batch: the one that ran with a core to itself. On a loaded machine the median moves
    # with the neighbours' load (their caches and hyperthreads slow even CPU time); the best
    # batch of many short ones barely does.
    medians = {label: min(values) for label, values in samples.items()}
    us = {label: round(value * 1e6, 1) for label, value in medians.items()}
    out = {
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "path": f"{PATH}?{QUERY}",
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "cpu_us_per_request": {"bare": us["bare"], "service": us["service"]},
        "median_cpu_us_per_request": {
            label: round(statistics.median(samples[label]) * 1e6, 1) for label in ("bare", "service")
        },
        "service_vs_bare": round(medians["service"] / medians["bare"], 3),
        # The in-process ceiling of lifecycle.py's requests/s ratio (the server's own work aside).
        "bare_rate_ratio": round(medians["bare"] / medians["service"], 3),
    }
    if not args.no_each:
        out["cost_us_each"] = {
            name: round((medians["service"] - medians[f"without {name}"]) * 1e6, 1)
            if f"without {name}" in medians
            else "needed by another"
            for name in service
        }
    out["samples_us"] = {label: [round(value * 1e6, 1) for value in values] for label, values in samples.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
