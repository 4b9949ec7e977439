"""Settings shared by every environment. Addresses and secrets come from the environment."""

import os
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from lifecycle.conf import LifecycleSettings
from settings.database import database_config
from settings.env import env_bool, env_float, env_int, env_list, env_settings, env_str, sentinel_address
from settings.sentinel import sentinel_cache

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "insecure-local-only-key-never-used-in-production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # The admin, its apps' admin.py discovered on first use (omk/apps.py).
    "omk.apps.LazyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Durable jobs: procrastinate's models and migrations.
    "procrastinate.contrib.django",
    # The instance's life, and beside it the small apps every domain app builds on.
    "lifecycle",
    "lifecycle.locks",
    "lifecycle.outbox",
    "lifecycle.idempotency",
    "lifecycle.sessions",
    "lifecycle.queues",
    # Login lockout on every login path (API, pages, admin).
    "axes",
    # The domain.
    "accounts",
    "governance",
    "hive",
]

MIDDLEWARE = [
    # A request id for the logs and the in-flight count the shutdown reports.
    "lifecycle.middleware.RequestContextMiddleware",
    # Then: probes are answered before host validation, sessions or auth (kubelet sends the
    # pod IP as Host, and a probe must not depend on the session store).
    "lifecycle.middleware.ProbeMiddleware",
    # Request count, latency and in-flight by route; outside the 503 it counts by dependency.
    "lifecycle.middleware.RequestMetricsMiddleware",
    # Wakes the worker (when it scales to zero) after a request that created background work.
    "lifecycle.wake.WakeWorkerMiddleware",
    "core.middleware.DependencyUnavailableMiddleware",
    # Before sessions: a 64 KiB+ body under /api/ is refused before any work (core/conf.py).
    "core.middleware.ApiGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files (the admin's CSS and scripts) from each instance.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "lifecycle.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY below).
    "core.csp.ContentSecurityPolicyMiddleware",
    # Last: turns a login refused while locked out (any login path) into 429 with Retry-After.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "omk.urls"
WSGI_APPLICATION = "omk.wsgi.application"

# django-ninja's templates and static files, for the API docs page (Swagger UI from this service,
# through whitenoise, not from a CDN it does not control; omk.api.LocalSwagger). Found without
# importing ninja: "ninja" in INSTALLED_APPS would import it and pydantic at django.setup(), about
# 130 ms of every cold start, for the one page that needs it.
_NINJA_DIR = Path(find_spec("ninja").origin).parent  # type: ignore[union-attr, arg-type]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates", _NINJA_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "omk.pages.navigation",
            ],
        },
    },
]

# PostgreSQL through psycopg 3 and Django's pool. The pool is created lazily on the first query,
# so it opens inside each gunicorn worker after fork, never in the master (no preload_app).
# Several hosts (`postgres://h1:5432,h2:5432/omk?target_session_attrs=read-write`, libpq's form)
# for a primary and its standby: each new connection goes to whichever is primary now.
DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/omk")
# Every wait on PostgreSQL has an explicit bound, so a path that silently drops packets (a
# partition, a dead NAT entry) costs a request seconds, not TCP's minutes of retransmissions:
# - connect_timeout: opening a connection (the SYN is never answered);
# - tcp_user_timeout: data sent and never acknowledged (a query on a dropped path) breaks the
#   connection after this many ms; the keepalives find a dead path on an idle connection;
# - statement_timeout: one statement, server side (a lock wait included);
# - lock_timeout: a lock wait alone, off by default (statement_timeout bounds it); the migration
#   job sets it instead of a statement_timeout (k8s/jobs/migrate.yaml);
# - idle_in_transaction_session_timeout: the server ends a session whose client went silent inside
#   a transaction, so the row locks of a partitioned instance are released.
# The server gets the same tcp_user_timeout and keepalives for its end (they are per-session
# settings), so it drops a vanished client's backend as fast.
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 10_000)
DB_LOCK_TIMEOUT_MS = env_int("DB_LOCK_TIMEOUT_MS", 0)
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = env_int("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 15_000)
DB_TCP_USER_TIMEOUT_MS = env_int("DB_TCP_USER_TIMEOUT_MS", 5_000)
DB_KEEPALIVES_IDLE = env_int("DB_KEEPALIVES_IDLE", 10)
DB_KEEPALIVES_INTERVAL = env_int("DB_KEEPALIVES_INTERVAL", 3)
DB_KEEPALIVES_COUNT = env_int("DB_KEEPALIVES_COUNT", 3)
_database = database_config(DATABASE_URL, conn_max_age=0)
_server_options = " ".join(
    f"-c {name}={value}"
    for name, value in (
        ("statement_timeout", DB_STATEMENT_TIMEOUT_MS),
        ("lock_timeout", DB_LOCK_TIMEOUT_MS),
        ("idle_in_transaction_session_timeout", DB_IDLE_IN_TRANSACTION_TIMEOUT_MS),
        ("tcp_user_timeout", DB_TCP_USER_TIMEOUT_MS),
        ("tcp_keepalives_idle", DB_KEEPALIVES_IDLE),
        ("tcp_keepalives_interval", DB_KEEPALIVES_INTERVAL),
        ("tcp_keepalives_count", DB_KEEPALIVES_COUNT),
    )
)
# DATABASES, CACHES and LOGGING are annotated as Django reads them (options of any type): mypy
# would infer each literal's join instead, and `settings.CACHES[...]` would be a Collection[str].
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        **_database,
        # Each pooled connection is tested when it leaves the pool, by the backend (core.postgresql)
        # rather than by psycopg_pool's check, which finds a restart's broken connections one per
        # backoff step.
        "ENGINE": "core.postgresql",
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {
            # The URL's own options (target_session_attrs, sslmode...), then the service's.
            **_database.get("OPTIONS", {}),
            "connect_timeout": env_int("DB_CONNECT_TIMEOUT", 3),
            "keepalives": 1,
            "keepalives_idle": DB_KEEPALIVES_IDLE,
            "keepalives_interval": DB_KEEPALIVES_INTERVAL,
            "keepalives_count": DB_KEEPALIVES_COUNT,
            "tcp_user_timeout": DB_TCP_USER_TIMEOUT_MS,
            # An `options` of the URL's own comes later on the line: it wins over these defaults.
            "options": " ".join(filter(None, [_server_options, _database.get("OPTIONS", {}).get("options", "")])),
            # Names the process that opened the connection (settings load in each worker).
            "application_name": f"omk-{os.getpid()}",
            "pool": {
                "min_size": env_int("DB_POOL_MIN_SIZE", 1),
                "max_size": env_int("DB_POOL_MAX_SIZE", 10),
                # Wait this long for a free connection, then fail fast (503) instead of hanging.
                "timeout": env_float("DB_POOL_TIMEOUT", 2.0),
                # Recycle connections so a failover or a server restart is absorbed over time.
                "max_lifetime": env_float("DB_POOL_MAX_LIFETIME", 1800.0),
                "max_idle": env_float("DB_POOL_MAX_IDLE", 300.0),
            },
        },
    }
}

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# A Redis command waits at most REDIS_SOCKET_TIMEOUT for its reply, a connection at most
# REDIS_CONNECT_TIMEOUT for the handshake, and a timeout is not retried (see "retry" below).
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 1.0)
# Redis Sentinel: "host:port,host:port,...". When set, every client asks them for the primary of
# REDIS_SENTINEL_MASTER (and asks again after a failover); REDIS_URL then gives only the database
# number and the password, its host is not used. Unset: REDIS_URL's host (Memorystore's one
# endpoint, which moves to the new primary by itself).
REDIS_SENTINELS = [sentinel_address(item) for item in env_list("REDIS_SENTINELS", [])]
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "") if REDIS_SENTINELS else ""
if REDIS_SENTINELS and not REDIS_SENTINEL_MASTER:
    raise ImproperlyConfigured("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the monitored primary.")
CACHES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Values are JSON, never pickles: whoever can write to Redis must not be able to run
            # code in the instances by planting a pickle. (A session stored as a pickle before
            # this no longer decodes: its user is logged out once, see lifecycle/sessions.)
            "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
            "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "CONNECTION_POOL_KWARGS": {
                "max_connections": env_int("REDIS_MAX_CONNECTIONS", 50),
                "socket_keepalive": True,
                # PING an idle connection before reuse: catches connections a Redis restart cut.
                "health_check_interval": env_int("REDIS_HEALTH_CHECK_INTERVAL", 15),
                # Retried: a connection refused or reset (a restart, a failover), which fails fast.
                # Not retried: a timeout. redis-py nests its retries (the command, the health
                # check's PING, the reconnection each retry on their own), so on a path that drops
                # packets retried timeouts add up to over 20 s for one call; unretried, a call
                # gives up after one REDIS_SOCKET_TIMEOUT (or REDIS_CONNECT_TIMEOUT).
                "retry": Retry(
                    ExponentialBackoff(cap=0.5, base=0.05), retries=3, supported_errors=(RedisConnectionError,)
                ),
                "retry_on_error": [RedisConnectionError],
            },
        },
    }
}
if REDIS_SENTINELS:
    CACHES["default"]["LOCATION"], _sentinel_options = sentinel_cache(
        REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_SOCKET_TIMEOUT
    )
    CACHES["default"]["OPTIONS"].update(_sentinel_options)

SESSION_ENGINE = "lifecycle.sessions.backend"
SESSION_CACHE_ALIAS = "default"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 3600)
# Sliding expiry: every request that uses the session pushes its expiry an hour ahead.
SESSION_SAVE_EVERY_REQUEST = True

# Django's ModelBackend with the per-request user lookup compiled once (accounts/backends.py).
# django-axes first: while a username or address is locked out it refuses before the password is
# checked, on every path that calls authenticate() (the API's login, /login/, the admin's).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "accounts.backends.ModelBackend"]

# Login lockout (django-axes). Failures are counted in Redis (the cache: INCR, shared by every
# instance), per username and per address separately: either reaching the limit locks it for the
# cool-off, which each further failure pushes back. A success clears that username's and
# address's count. Redis unreachable: the login is a 503 (fail closed), never an unchecked guess.
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CACHE = "default"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.clients.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
# The attempts are logged by the service's own logs; no per-attempt rows in PostgreSQL.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Pages load only this service's own scripts, styles (and inline styles: the templates have a
# <style> block), images and forms; nothing may frame them. The API docs page runs Swagger UI's
# inline start-up script, so it is left out (it is staff-only in production).
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/docs"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [_NINJA_DIR / "static"]
# None where nothing is collected (settings/test.py).
STATIC_ROOT: Path | None = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The project's shutdown: lifecycle's own steps, and the hive's Queen replies handed back right
# after the jobs (lifecycle knows no domain app; the project wires them together).
LIFECYCLE_SHUTDOWN_STEPS = list(LifecycleSettings.SHUTDOWN_STEPS)
LIFECYCLE_SHUTDOWN_STEPS.insert(
    LIFECYCLE_SHUTDOWN_STEPS.index("lifecycle.shutdown.HandBackJobs") + 1, "hive.steps.HandBackReplies"
)

# Each app's settings and their defaults are in its conf.py (core/conf.py, lifecycle/conf.py,
# lifecycle/*/conf.py, governance/conf.py, hive/conf.py); here only what an environment variable
# sets, so that the default stays written once, where the setting is declared.
globals().update(
    env_settings(
        {
            "OMK_RETRY_AFTER_SECONDS": ("RETRY_AFTER_SECONDS", env_int),
            "OMK_REDIS_MIN_REPLICAS_ACK": ("REDIS_MIN_REPLICAS_ACK", env_int),
            "OMK_REDIS_REPLICAS_ACK_TIMEOUT": ("REDIS_REPLICAS_ACK_TIMEOUT", env_float),
            "OMK_RUN_DIR": ("OMK_RUN_DIR", env_str),
            "OMK_TRUSTED_PROXY_HOPS": ("TRUSTED_PROXY_HOPS", env_int),
            "OMK_API_THROTTLE_USER": ("API_THROTTLE_USER", env_str),
            "OMK_API_THROTTLE_ANON": ("API_THROTTLE_ANON", env_str),
            "LIFECYCLE_HEARTBEAT_INTERVAL": ("INSTANCE_HEARTBEAT_INTERVAL", env_float),
            "LIFECYCLE_HEARTBEAT_TTL": ("INSTANCE_HEARTBEAT_TTL", env_float),
            # Unset: the platform's default (0 on Cloud Run, where traffic stops before SIGTERM).
            "LIFECYCLE_DRAIN_DELAY": ("DRAIN_DELAY", env_float),
            "LIFECYCLE_STALLED_JOB_SECONDS": ("STALLED_JOB_SECONDS", env_float),
            "LIFECYCLE_IDLE_HEARTBEAT_TTL": ("IDLE_HEARTBEAT_TTL", env_float),
            "LIFECYCLE_WAKE_URL": ("WAKE_URL", env_str),
            "LIFECYCLE_WAKE_AUDIENCE": ("WAKE_AUDIENCE", env_str),
            "LIFECYCLE_WAKE_TOKEN": ("WAKE_TOKEN", env_str),
            "LIFECYCLE_WAKE_DEBOUNCE": ("WAKE_DEBOUNCE", env_float),
            "LIFECYCLE_WAKE_EVENT_DEBOUNCE": ("WAKE_EVENT_DEBOUNCE", env_float),
            "LIFECYCLE_WAKE_SERVE": ("WAKE_SERVE", env_bool),
            "LIFECYCLE_DRAIN_MAX_SECONDS": ("DRAIN_MAX_SECONDS", env_float),
            "LIFECYCLE_WORKER_METRICS_PORT": ("WORKER_METRICS_PORT", env_int),
            "LIFECYCLE_WORKER_HUNG_SECONDS": ("WORKER_HUNG_SECONDS", env_float),
            "LIFECYCLE_SHUTDOWN_STEPS": ("LIFECYCLE_SHUTDOWN_STEPS", env_list),
            "LIFECYCLE_RECOVERY_STEPS": ("LIFECYCLE_RECOVERY_STEPS", env_list),
            "OUTBOX_SINK": ("OUTBOX_SINK", env_str),
            "OUTBOX_BATCH_SIZE": ("OUTBOX_BATCH_SIZE", env_int),
            "OUTBOX_RETENTION_DAYS": ("OUTBOX_RETENTION_DAYS", env_int),
            "OUTBOX_BATCH_LINGER_SECONDS": ("OUTBOX_BATCH_LINGER_SECONDS", env_float),
            "OUTBOX_RECOVER_AFTER_SECONDS": ("OUTBOX_RECOVER_AFTER_SECONDS", env_float),
            "OUTBOX_BIGQUERY_PROJECT": ("BIGQUERY_PROJECT", env_str),
            "OUTBOX_BIGQUERY_DATASET": ("BIGQUERY_DATASET", env_str),
            "OUTBOX_BIGQUERY_LOCATION": ("BIGQUERY_LOCATION", env_str),
            "OUTBOX_BIGQUERY_EMULATOR_URL": ("BIGQUERY_EMULATOR_URL", env_str),
            "QUEEN_LLM_BACKEND": ("QUEEN_LLM_BACKEND", env_str),
            "QUEEN_LOCAL_DELAY": ("QUEEN_LOCAL_DELAY", env_float),
            "QUEEN_GENERATION_TIMEOUT": ("QUEEN_GENERATION_TIMEOUT", env_float),
            "QUEEN_MAX_ATTEMPTS": ("QUEEN_MAX_ATTEMPTS", env_int),
            "QUEEN_BACKOFF_SECONDS": ("QUEEN_BACKOFF_SECONDS", env_float),
            "QUEEN_VERTEX_PROJECT": ("QUEEN_VERTEX_PROJECT", env_str),
            "QUEEN_VERTEX_LOCATION": ("QUEEN_VERTEX_LOCATION", env_str),
            "QUEEN_GEMINI_MODEL": ("QUEEN_GEMINI_MODEL", env_str),
            "QUEEN_GEMINI_BASE_URL": ("QUEEN_GEMINI_BASE_URL", env_str),
            "GOVERNANCE_PURCHASE_PENDING_TTL": ("PURCHASE_PENDING_TTL", env_float),
            "GOVERNANCE_PAYMENT_WEBHOOK_SECRET": ("PAYMENT_WEBHOOK_SECRET", env_str),
            "OUTBOX_BIGQUERY_EMULATOR_GRPC": ("BIGQUERY_EMULATOR_GRPC", env_str),
        }
    )
)

# The worker heartbeats every second and a worker silent for 3 s is stalled: a SIGKILLed worker's
# job is retried seconds after the kill (25 s with procrastinate's defaults). A retried job is
# not announced by NOTIFY, so the polling interval bounds how soon it is picked up again.
PROCRASTINATE_WORKER_DEFAULTS = {
    "update_heartbeat_interval": 1.0,
    "fetch_job_polling_interval": env_float("JOB_POLLING_INTERVAL", 0.5),
    "abort_job_polling_interval": 1.0,
}
PROCRASTINATE_IMPORT_PATHS = env_list("PROCRASTINATE_IMPORT_PATHS", [])
# Web pages: Django's login view; logged-in users land on the proposals.
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/proposals/"
LOGOUT_REDIRECT_URL = "/login/"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # Cloud Logging reads `severity` and `message` from one JSON object per line; gunicorn's
        # access and error lines use the same formatter (lifecycle.logs.GunicornLogger).
        "json": {"()": "lifecycle.logs.json_formatter"},
    },
    # Every record carries the request id and the instance id.
    "filters": {"context": {"()": "lifecycle.logs.ContextFilter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # A probe or a dependency outage must not print a traceback per request.
        "health_check": {"level": "ERROR"},
        # procrastinate announces every task registration at INFO.
        "procrastinate.blueprints": {"level": "WARNING"},
        "procrastinate.periodic": {"level": "WARNING"},
    },
}
