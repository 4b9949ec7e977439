"""Each settings module as a real process would load it, configured only from the environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_SECRET = "k3J9vQ2xL8mN4pR7tW1yZ6bC5dF0gH3jK8lM2nP5qS9uV4wX7zA1cE6fG0hI3jL"
WEBHOOK_SECRET = "whsec_4f8Qk2Lz9Xv1Nw7Rt3Yp6Jd0Hs5Gb8Mc"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    unset = ("SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE", "PAYMENT_WEBHOOK_SECRET")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production__check_deploy_reports_no_issue():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="settings.production",
        SECRET_KEY=PRODUCTION_SECRET,
        ALLOWED_HOSTS="hive.omk.example",
        PAYMENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production__refuses_to_start_without_secret_key():
    result = manage("check", DJANGO_SETTINGS_MODULE="settings.production", ALLOWED_HOSTS="hive.omk.example")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production__refuses_to_start_without_allowed_hosts():
    result = manage("check", DJANGO_SETTINGS_MODULE="settings.production", SECRET_KEY=PRODUCTION_SECRET)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_production__refuses_to_start_without_payment_webhook_secret():
    result = manage(
        "check", DJANGO_SETTINGS_MODULE="settings.production", SECRET_KEY=PRODUCTION_SECRET, ALLOWED_HOSTS="h.example"
    )
    assert result.returncode != 0
    assert "PAYMENT_WEBHOOK_SECRET is not set" in result.stderr


def test_local__bad_number_in_environment_is_named():
    result = manage("check", DJANGO_SETTINGS_MODULE="settings.local", DB_POOL_MAX_SIZE="many")
    assert result.returncode != 0
    assert "DB_POOL_MAX_SIZE must be a whole number" in result.stderr


def test_migrations__none_missing():
    result = manage("makemigrations", "--check", "--dry-run", DJANGO_SETTINGS_MODULE="settings.test")
    assert result.returncode == 0, result.stdout + result.stderr


def test_base__database_bounds_on_every_connection_and_the_urls_own_options_win():
    code = (
        "import json; from django.conf import settings; "
        "print(json.dumps({k: v for k, v in settings.DATABASES['default']['OPTIONS'].items() if k != 'pool'}))"
    )
    url = "postgres://u@db/omk?options=-c%20statement_timeout%3D0&target_session_attrs=read-write"
    result = manage("shell", "-c", code, DJANGO_SETTINGS_MODULE="settings.local", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert options["connect_timeout"] == 3
    assert options["tcp_user_timeout"] == 5000
    assert (options["keepalives"], options["keepalives_idle"], options["keepalives_count"]) == (1, 10, 3)
    assert options["target_session_attrs"] == "read-write"
    server = options["options"].split()
    assert "statement_timeout=10000" in server
    assert "idle_in_transaction_session_timeout=15000" in server
    assert "lock_timeout=0" in server  # off: statement_timeout bounds a lock wait
    assert "tcp_user_timeout=5000" in server
    # libpq applies `-c` options in order: the URL's own statement_timeout comes last and wins.
    assert server[-1] == "statement_timeout=0"


def test_base__lock_timeout_ends_a_lock_wait_at_its_bound():
    """What the migration job relies on (k8s/jobs/migrate.yaml): with no statement_timeout, a
    statement waiting for a lock another session holds gives up at DB_LOCK_TIMEOUT_MS."""
    code = """
import os, time, psycopg
from django.db import connection
holder = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
holder.execute("SELECT pg_advisory_lock(424242)")
started = time.monotonic()
try:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(424242)")
    print("acquired")
except Exception as error:
    print(getattr(error.__cause__, "sqlstate", None), round(time.monotonic() - started, 2))
"""
    result = manage(
        "shell",
        "-c",
        code,
        DJANGO_SETTINGS_MODULE="settings.local",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        DB_STATEMENT_TIMEOUT_MS="0",
        DB_LOCK_TIMEOUT_MS="300",
    )
    assert result.returncode == 0, result.stderr
    sqlstate, waited = result.stdout.split()[-2:]
    assert sqlstate == "55P03"  # lock_not_available
    assert 0.25 <= float(waited) < 3.0
