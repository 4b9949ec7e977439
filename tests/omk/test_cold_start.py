"""What an instance loads before its first request: none of the heavy modules that only some
requests need (docs/benchmarks.md#cold-start).

The gunicorn master runs `django.setup()` and `lifecycle.warmup.preload_request_path()` (the
WSGI application, the URLconf, the startup recovery) before it forks; a fresh interpreter does
the same here and reports `sys.modules`.
"""

import json
import sys

import pytest
from django.urls import resolve, reverse

from tests.support.interpreter import python_output

# Module -> the request (or process) that imports it, and why it may not come earlier.
HEAVY = {
    "omk.api": "the first request under /api/: every operation's pydantic models (about 130 ms)",
    "accounts.api": "the first request under /api/ (omk.api)",
    "governance.api": "the first request under /api/ (omk.api)",
    "hive.api": "the first request under /api/ (omk.api)",
    "ninja": "the first request under /api/ (omk.api): django-ninja and pydantic (about 130 ms)",
    "pydantic": "the first request under /api/ (omk.api)",
    "governance.admin": "the first request under /admin/ (omk.admin_urls discovers every admin.py)",
    "hive.admin": "the first request under /admin/ (omk.admin_urls)",
    "lifecycle.admin": "the first request under /admin/ (omk.admin_urls)",
    "Crypto.Hash.keccak": "the first wallet checksum: pycryptodome's cffi bindings (about 80 ms)",
    "cffi": "the first wallet checksum (Crypto.Hash.keccak)",
    "pycparser": "the first wallet checksum (Crypto.Hash.keccak)",
    "google.cloud.bigquery": "the outbox export to BigQuery (about 1 s)",
    "google.cloud.bigquery_storage": "the outbox export to BigQuery",
    "google.api_core": "the outbox export to BigQuery, the Vertex AI backend",
    "grpc": "the outbox export to BigQuery",
    "google.genai": "the queen's Vertex AI backend",
}

LOADED = """
import json, sys
import django
django.setup()
from lifecycle.warmup import preload_request_path
preload_request_path()
import omk.urls
from django.urls import resolve

resolve("/ready")
{extra}
print(json.dumps(sorted(sys.modules)))
"""


def modules_at_start(extra: str = "") -> set[str]:
    return set(json.loads(python_output(LOADED.format(extra=extra)).strip().splitlines()[-1]))


def heavy_among(modules: set[str]) -> dict[str, str]:
    return {name: why for name, why in HEAVY.items() if name in modules}


@pytest.mark.slow
def test_start__imports_no_heavy_module():
    assert heavy_among(modules_at_start()) == {}


@pytest.mark.slow
def test_start__an_added_import_is_caught():
    """The check sees a heavy module that something imports at start-up (it can fail)."""
    checksum = "from governance.wallets import to_checksum_address\nto_checksum_address('0x' + '0' * 40)"
    found = heavy_among(modules_at_start(checksum))
    assert "Crypto.Hash.keccak" in found


def test_urls__api_mounted_by_module_name():
    """Django's URLResolver given a module name (what omk.urls relies on to keep the API lazy)
    imports it when first asked, and matches and reverses under its namespace as include() would."""
    match = resolve("/api/openapi.json")
    assert (match.url_name, match.namespaces, match.app_names) == ("openapi-json", ["api"], ["ninja"])
    assert reverse("api:openapi-json") == "/api/openapi.json"
    assert "omk.api" in sys.modules


def test_urls__openapi_schema_served(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "OMK Hive API"
