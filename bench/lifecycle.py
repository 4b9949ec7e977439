"""Lifecycle benchmark: this service against a bare Django + gunicorn app, in one run.

    .venv/bin/python bench/lifecycle.py [--rounds 3] [--seconds 5]

Prints one JSON object: cold start (exec to the first 200 on /ready), SIGTERM-to-exit when idle
(with the drain delay as on Cloud Run, 0), and requests/s on a trivial view through every
middleware, each the median of the rounds (at least 3), for each app, with the machine's load
average beside each figure (1-minute, at each sample: median, min and max), the ratios and
whether each goal is met (cold start <= 1.3x bare, stop <= 1.5x bare, req/s >= 0.95x bare). The
apps take turns within each round, so that a change in the machine's load hits all of them. Needs
PostgreSQL and Redis (database `omk_bench`, created and migrated first, not timed; Redis db 13).
Both apps' modules are compiled to bytecode first, as the image has them (`compile_bytecode`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.instances import free_port  # noqa: E402

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/omk_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
WORKERS, THREADS = "2", "4"

# What Django's startproject lists: the bare baseline's middleware (also bench/request_path.py's).
STARTPROJECT_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
BARE_SETTINGS = (
    """
import dj_database_url, os
SECRET_KEY = "bench"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bare_urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                  "django.contrib.messages"]
# Signed-cookie sessions so that no database is needed; startproject's middleware (below).
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
USE_TZ = True
"""
    + f"MIDDLEWARE = {STARTPROJECT_MIDDLEWARE!r}\n"
)
BARE_URLS = """
import os
import time
import redis
from django.db import connection
from django.http import JsonResponse
from django.urls import path

_redis = redis.Redis.from_url(os.environ["REDIS_URL"])

def ready(request):
    # A readiness probe as any app has one: PostgreSQL and Redis answer.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    _redis.ping()
    return JsonResponse({"status": "ok"})

def slow(request):
    # What the service's test view (lifecycle/testing_views.py) does, so that both apps do the
    # same work in the view (a query string parsed, a JSON body) and differ only around it.
    try:
        seconds = float(request.GET.get("seconds", "1"))
    except ValueError:
        return JsonResponse({"error": "invalid"}, status=400)
    seconds = min(max(seconds, 0.0), 30.0)
    if seconds > 0:
        time.sleep(seconds)
    return JsonResponse({"slept": seconds})

urlpatterns = [path("ready", ready), path("trivial", slow)]
"""
BARE_WSGI = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bare_settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


class App:
    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, trivial: str):
        self.name, self.command, self.env, self.cwd, self.trivial = name, command, env, cwd, trivial

    def start(self, port: int) -> subprocess.Popen:
        env = {**os.environ, **self.env, "PORT": str(port)}
        return subprocess.Popen(
            [*self.command, "-b", f"127.0.0.1:{port}"] if self.name != "service" else self.command,
            cwd=self.cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def get_status(port: int, path: str) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def cold_start_and_stop(app: App) -> tuple[float, float]:
    port = free_port()
    started = time.monotonic()
    process = app.start(port)
    try:
        while get_status(port, "/ready") != 200:
            if process.poll() is not None or time.monotonic() - started > 60:
                raise RuntimeError(f"{app.name} did not become ready")
            time.sleep(0.01)
        cold = time.monotonic() - started
        time.sleep(1.0)  # idle
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        return cold, time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def requests_per_second(app: App, seconds: float, clients: int = 8) -> float:
    port = free_port()
    process = app.start(port)
    try:
        deadline = time.monotonic() + 60
        while get_status(port, "/ready") != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app.name} did not become ready")
            time.sleep(0.02)
        for _ in range(50):  # warm up every worker
            get_status(port, app.trivial)
        counts = [0] * clients
        stop_at = time.monotonic() + seconds

        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            while time.monotonic() < stop_at:
                conn.request("GET", app.trivial)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    counts[index] += 1
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / seconds
    finally:
        process.send_signal(signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def compile_bytecode(bare_dir: Path) -> None:
    """Both apps' modules compiled to bytecode first, as the image has them (the Dockerfile's
    compileall): with PYTHONDONTWRITEBYTECODE set, as in the image and on some machines, no start
    would write it, and each one would compile every module of the project from source. The
    image leaves out what .dockerignore lists (tests, bench); compiling those too costs nothing
    at start, so every package of the repository is compiled."""
    sources = sorted(init.parent for init in ROOT.glob("*/__init__.py"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, sources), str(bare_dir)], check=True)


def prepare_database() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test", "DATABASE_URL": DATABASE_URL}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import psycopg; c=psycopg.connect('postgres://postgres@127.0.0.1:5432/postgres',"
            " autocommit=True); c.execute('CREATE DATABASE omk_bench') if not c.execute("
            "\"SELECT 1 FROM pg_database WHERE datname='omk_bench'\").fetchone() else None",
        ],
        check=True,
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (each figure is a median)")
    load_at_start = os.getloadavg()
    prepare_database()

    bare_dir = Path(tempfile.mkdtemp(prefix="omk-bench-bare-"))
    (bare_dir / "bare_settings.py").write_text(BARE_SETTINGS)
    (bare_dir / "bare_urls.py").write_text(BARE_URLS)
    (bare_dir / "bare_wsgi.py").write_text(BARE_WSGI)
    compile_bytecode(bare_dir)
    run_dir = tempfile.mkdtemp(prefix="omk-bench-run-")
    common = {"WEB_CONCURRENCY": WORKERS, "GUNICORN_THREADS": THREADS}
    bare = App(
        "bare",
        [
            GUNICORN,
            "--workers",
            WORKERS,
            "--threads",
            THREADS,
            "--worker-class",
            "gthread",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "9",
            "bare_wsgi:application",
        ],
        {**common, "PYTHONPATH": str(bare_dir), "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL},
        bare_dir,
        "/trivial?seconds=0",
    )
    service_env = {
        **common,
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "OMK_RUN_DIR": run_dir,
        "K_SERVICE": "bench",  # Cloud Run: 10 s budget, drain delay 0
        "LOG_LEVEL": "WARNING",
        # The shutdown exports the outbox (the instance's own lifecycle events): to a Redis set
        # here, so that the figure is the lifecycle's and not google-cloud-bigquery's import time.
        "OUTBOX_SINK": "tests.support.sinks.RedisSetSink",
    }
    # The same project served by stock gunicorn, without the lifecycle hooks: what the lifecycle
    # itself costs. (Its /ready has no recovery to wait for: no recovered flag is configured.)
    stock = App(
        "stock",
        [
            GUNICORN,
            "--workers",
            WORKERS,
            "--threads",
            THREADS,
            "--worker-class",
            "gthread",
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "9",
            "omk.wsgi:application",
        ],
        service_env,
        ROOT,
        "/_test/slow?seconds=0",
    )
    service = App(
        "service",
        [GUNICORN, "-c", "omk/gunicorn.conf.py"],
        service_env,
        ROOT,
        # Through every middleware (the probes skip most of them): a test view that sleeps 0 s.
        "/_test/slow?seconds=0",
    )

    apps = (bare, stock, service)
    results: dict[str, dict[str, list[float]]] = {a.name: {"cold": [], "stop": [], "rps": []} for a in apps}
    # The 1-minute load average when each sample was taken, per figure (all apps' samples).
    loads: dict[str, list[float]] = {"cold": [], "stop": [], "rps": []}
    for _ in range(args.rounds):
        for app in apps:
            loads["cold"].append(os.getloadavg()[0])
            cold, stop = cold_start_and_stop(app)
            loads["stop"].append(os.getloadavg()[0])
            results[app.name]["cold"].append(cold)
            results[app.name]["stop"].append(stop)
            results[app.name]["rps"].append(requests_per_second(app, args.seconds))
            loads["rps"].append(os.getloadavg()[0])

    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}

    def figure(key: str, goal: str, ok) -> dict:
        out: dict = {name: round(med[name][key], 3) for name in med}
        for base in ("bare", "stock"):
            ratio = med["service"][key] / med[base][key]
            out[f"ratio_vs_{base}"] = round(ratio, 2)
            out[f"met_vs_{base}"] = ok(ratio)
        out["goal"] = f"{goal} bare"
        out["met"] = out["met_vs_bare"]
        out["load_average"] = {
            "median": round(statistics.median(loads[key]), 2),
            "min": round(min(loads[key]), 2),
            "max": round(max(loads[key]), 2),
        }
        return out

    figures = {
        "cold_start_seconds": figure("cold", "<= 1.3x", lambda r: r <= 1.3),
        "sigterm_to_exit_idle_seconds": figure("stop", "<= 1.5x", lambda r: r <= 1.5),
        "requests_per_second": figure("rps", ">= 0.95x", lambda r: r >= 0.95),
    }

    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "workers": int(WORKERS),
                "threads": int(THREADS),
                "baselines": {
                    "bare": "a minimal Django app (startproject middleware, /ready checks PostgreSQL and Redis)",
                    "stock": "this project under stock gunicorn, without the lifecycle hooks",
                },
                "cpus": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in load_at_start],
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                **figures,
                "goals_met": {name: f["met"] for name, f in figures.items()},
                "all_goals_met": all(f["met"] for f in figures.values()),
                "samples": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
