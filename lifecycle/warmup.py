"""What the gunicorn master loads before it forks: everything the first request needs.

A worker forked from a master that has imported the WSGI application (its middleware), the
URLconf (the readiness view and its checks) and the startup recovery's steps answers its first
probe without importing anything; without it each worker imports them again, on cores that are
busy booting the other workers. Nothing here opens a connection (the workers must open their
own): importing and building objects only.

Python's cyclic garbage collector is off while the master imports: start-up creates hundreds of
thousands of long-lived objects (modules, classes, functions) and the collector's passes over
them, about a fifth of the import time, free nothing. Before the fork the survivors are frozen
(`gc.freeze()`: never scanned again, and not written to by the collector, so the workers keep
sharing their memory pages with the master) and collection is turned back on.
"""

from __future__ import annotations

import gc
from importlib import import_module

from django.conf import settings
from django.urls import get_resolver
from django.utils.module_loading import import_string

# What web_startup imports when it runs (lifecycle.startup), and what its steps import.
STARTUP_MODULES = (
    "core.connections",
    "lifecycle.metrics",
    "lifecycle.models",
    "lifecycle.services",
    "lifecycle.recovery",
    "lifecycle.jobs",
    "lifecycle.outbox.services",
)


def collection_resume() -> None:
    """In the master, after the last import and before the first fork (omk/gunicorn.conf.py
    paused collection before its first import: it may not import Django, nor this module)."""
    gc.freeze()
    gc.enable()


def preload_startup() -> None:
    """Import what the startup's registration and recovery need (lifecycle.startup.web_startup):
    the database and cache backends, as Django loads them on first use, and the steps."""
    from lifecycle.conf import lifecycle_settings

    for database in settings.DATABASES.values():
        import_module(f"{database['ENGINE']}.base")
    for cache in settings.CACHES.values():
        import_string(cache["BACKEND"])
    for module in STARTUP_MODULES:
        import_module(module)
    for path in lifecycle_settings.RECOVERY_STEPS:
        import_string(path)


def preload_request_path() -> None:
    """Import what the first request and the startup recovery need (see the module docstring)."""
    preload_startup()
    import_string(settings.WSGI_APPLICATION)
    # The root URLconf (omk.urls; the API and the admin under it stay lazy: omk.api_urls).
    get_resolver().url_patterns  # noqa: B018
    # The readiness view's checks (named by dotted path, imported when the view first runs).
    from lifecycle.views import ReadinessView

    for path in ReadinessView.checks:
        import_string(path)
