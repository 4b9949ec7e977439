"""The Cloud Run functions entry point: the whole Django application behind one HTTP function.

    functions-framework --source omk/function.py --target serve

functions-framework imports this file as a module of its own (named after the file) with the
Flask app it builds around `serve` as the current app; every path and method is routed to
`serve`, which hands the request's WSGI environ to Django. The instance's lifecycle (registry,
startup recovery before the first request, SIGTERM drain and report) is lifecycle/function_hooks.py.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# functions-framework puts this file's directory on sys.path, not the project's.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.production")

from core.conf import CoreSettings  # noqa: E402  (after the path and settings module are set)
from lifecycle.function_hooks import function_instance_start  # noqa: E402

function_instance_start(run_dir=Path(os.environ.get("OMK_RUN_DIR") or CoreSettings.RUN_DIR))

import flask  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()


def serve(request: flask.Request):
    """Flask calls a returned WSGI application with the request's environ: Django answers it."""
    return application


# Flask's own static route (/static/<path:filename>, from a folder of Flask's) would win over
# `serve` for the admin's and the API docs' files, which Django serves (whitenoise).
flask.current_app.view_functions["static"] = lambda filename: application
