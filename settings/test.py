"""Test run: the real PostgreSQL and a dedicated Redis database, flushed between tests."""

import os

from settings.base import *  # noqa: F403
from settings.base import CACHES, DATABASES, REDIS_URL
from settings.env import env_float, env_int, env_str

DEBUG = False
# Several checkouts may test at once on one machine: each picks its own database and Redis db.
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", "test_omk")}
REDIS_TEST_DB = env_int("REDIS_TEST_DB", 15)
# pytest-xdist's workers (gw0, gw1, ...) each get a Redis db of their own, counting down from
# REDIS_TEST_DB (pytest-django gives each its own database: test_omk_gw0, ...).
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _xdist_worker.startswith("gw"):
    REDIS_TEST_DB -= int(_xdist_worker.removeprefix("gw"))
if "REDIS_URL" not in os.environ:
    CACHES["default"]["LOCATION"] = REDIS_URL.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"

# Payment webhooks in the tests are signed with this (tests/governance sign with governance.payments.sign).
GOVERNANCE_PAYMENT_WEBHOOK_SECRET = "test-webhook-secret"

# Tests fire bursts at one user from one address; the throttle tests set the rates they test.
OMK_API_THROTTLE_USER = "10000/s"
OMK_API_THROTTLE_ANON = "10000/s"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]

# The slow view the shutdown tests keep in flight (never in production).
LIFECYCLE_TEST_VIEWS = True
# Lets a test kill an instance after COMMIT, before the response.
IDEMPOTENCY_PAUSE_AFTER_COMMIT = env_float("OMK_TEST_PAUSE_AFTER_COMMIT", 0.0)
# The bqemulator the tests start.
OUTBOX_BIGQUERY_EMULATOR_URL = env_str("BIGQUERY_EMULATOR_URL", "http://127.0.0.1:9050")
OUTBOX_BIGQUERY_EMULATOR_GRPC = env_str("BIGQUERY_EMULATOR_GRPC", "127.0.0.1:9060")

# Static files straight from the apps (no collectstatic before the tests).
WHITENOISE_USE_FINDERS = True
# Nothing is collected before the tests: no STATIC_ROOT to scan (whitenoise would warn).
STATIC_ROOT = None

# No network in tests: the deterministic local backend, and retries that come quickly.
QUEEN_LLM_BACKEND = env_str("QUEEN_LLM_BACKEND", "hive.llm.LocalBackend")
QUEEN_BACKOFF_SECONDS = env_float("QUEEN_BACKOFF_SECONDS", 0.2)
