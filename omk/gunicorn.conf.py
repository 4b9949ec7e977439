"""gunicorn settings. Imported by the master before Django exists: nothing here may import Django
or prometheus_client (lifecycle.gunicorn_hooks imports them inside the hooks)."""

import gc
import os
import sys
from pathlib import Path

# No cyclic garbage collection while the master imports (lifecycle.warmup: a fifth of the import
# time, nothing to free); when_ready freezes what was loaded and turns it back on before forking.
gc.disable()

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.conf import CoreSettings  # noqa: E402  (after gc.disable())
from lifecycle import gunicorn_hooks  # noqa: E402  (after gc.disable())
from lifecycle.gunicorn_hooks import configure_master_environment  # noqa: E402  (after gc.disable())
from lifecycle.platform import detect_platform  # noqa: E402  (after gc.disable())

platform_info = detect_platform()

wsgi_app = "omk.wsgi:application"
bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# No preload_app: the DB and Redis pools are created in each worker after fork (the master imports
# Django in on_starting but opens no connection before its workers are gone).
preload_app = False
# In-flight requests get what the platform leaves after our safety margin.
graceful_timeout = int(platform_info.shutdown_deadline)
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# Longer than a load balancer keeps an idle connection to us (Google's: 600 s, fixed), so the
# balancer closes it, never we: closing it ourselves races a request it is sending on it, which
# fails (a 502) without reaching us. A stopping worker keeps its idle connections 2 s at most.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "620"))
# gunicorn's control socket has one default path per user: several instances on one host would
# take it from each other. We stop instances with signals and `manage.py stop` instead.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
# JSON lines like the application's when it logs JSON (production), with request_id and instance_id.
logger_class = "lifecycle.logs.GunicornLogger"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# The master's instance id, drain and recovered flags and metrics directory are set in its
# environment here, before anything forks; the hooks below do the rest. (Django's settings are
# not loaded yet: the run directory is read as settings/base.py reads it.)
_run_dir = Path(os.environ.get("OMK_RUN_DIR") or CoreSettings.RUN_DIR)
configure_master_environment(_run_dir)

on_starting = gunicorn_hooks.on_starting
when_ready = gunicorn_hooks.when_ready
post_fork = gunicorn_hooks.post_fork
post_worker_init = gunicorn_hooks.post_worker_init
worker_exit = gunicorn_hooks.worker_exit
child_exit = gunicorn_hooks.child_exit
on_exit = gunicorn_hooks.on_exit
