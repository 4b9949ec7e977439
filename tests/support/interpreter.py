"""A fresh interpreter on the project, for what one process has loaded or registered at start."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT


def python_output(code: str) -> str:
    """What `code` prints, run by a new interpreter with the tests' settings."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "settings.test")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
