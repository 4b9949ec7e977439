"""gunicorn settings. Imported by the master before Django exists: stick to the standard library
and lifecycle.platform (pure Python)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifecycle.drain import DRAIN_FLAG_ENV, clear_draining
from lifecycle.platform import detect_platform

platform_info = detect_platform()

wsgi_app = "omk.wsgi:application"
bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# No preload_app: Django, its DB pool and Redis pool are created in each worker after fork.
preload_app = False
# In-flight requests get what the platform leaves after our safety margin.
graceful_timeout = int(platform_info.shutdown_deadline)
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = 5
# gunicorn's control socket has one default path per user: several instances on one host would
# take it from each other. We stop instances with signals and `manage.py stop` instead.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Workers inherit the flag's path: the master's SIGTERM makes all of them report not-ready.
_run_dir = Path(os.environ.get("OMK_RUN_DIR", "/tmp/omk"))
os.environ.setdefault(DRAIN_FLAG_ENV, str(_run_dir / f"gunicorn-{os.getpid()}.draining"))


def on_starting(server):
    clear_draining()
