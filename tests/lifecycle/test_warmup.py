"""The master's pre-fork loading (lifecycle.warmup)."""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.warmup import collection_resume

ROOT = Path(__file__).resolve().parents[2]


def test_collection__resumed_with_survivors_frozen():
    try:
        gc.disable()
        collection_resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.slow
def test_preload__loads_the_first_request_s_modules_and_opens_no_connection():
    code = """
import json, sys
import django
django.setup()
from django.db import connections
from lifecycle.warmup import preload_request_path
preload_request_path()
print(json.dumps({
    "modules": [m for m in ("omk.wsgi", "omk.urls", "lifecycle.views", "lifecycle.health",
                            "lifecycle.services", "lifecycle.recovery", "lifecycle.jobs") if m in sys.modules],
    "connections": [c.alias for c in connections.all(initialized_only=True) if c.connection is not None],
}))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "settings.test")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["modules"] == [
        "omk.wsgi",
        "omk.urls",
        "lifecycle.views",
        "lifecycle.health",
        "lifecycle.services",
        "lifecycle.recovery",
        "lifecycle.jobs",
    ]
    assert loaded["connections"] == []
