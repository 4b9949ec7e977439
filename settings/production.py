"""Cloud Run and GKE: every secret and address from the environment, nothing defaulted."""

import os

from django.core.exceptions import ImproperlyConfigured

from settings.base import *  # noqa: F403
from settings.env import env_bool, env_int, env_list

if not os.environ.get("SECRET_KEY"):
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Production refuses to start without it: set it from a secret "
        "(Kubernetes Secret or Secret Manager), at least 50 random characters."
    )
SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is not set: list the service's host names, comma-separated.")

# Without it no payment could be confirmed (every webhook is refused): refuse to start instead.
if not os.environ.get("PAYMENT_WEBHOOK_SECRET"):
    raise ImproperlyConfigured(
        "PAYMENT_WEBHOOK_SECRET is not set. Production refuses to start without it: set it from a "
        "secret to the payment processor's webhook signing secret."
    )
GOVERNANCE_PAYMENT_WEBHOOK_SECRET = os.environ["PAYMENT_WEBHOOK_SECRET"]

# /metrics only to scrapes of the pod itself (no X-Forwarded-For) or with METRICS_TOKEN.
LIFECYCLE_METRICS_PUBLIC = False
LIFECYCLE_METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# The schema and docs describe every operation: staff only in production (the admin's login).
OMK_API_DOCS_PUBLIC = False

LOG_FORMAT = "json"
LOGGING["handlers"]["stdout"]["formatter"] = "json"  # noqa: F405

# TLS ends at the Google front end / load balancer, which sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes come over plain HTTP from the kubelet: never redirect them.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading is a promise to browsers' built-in lists that is slow to take back: only when the
# domain's owners have decided it (SECURE_HSTS_PRELOAD=true) and submitted the domain.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = ["security.W021"]  # "SECURE_HSTS_PRELOAD is not True": on purpose
SECURE_CONTENT_TYPE_NOSNIFF = True

# The real BigQuery. An empty BIGQUERY_PROJECT means the project of the workload's credentials
# (Application Default Credentials on Cloud Run / GKE).
OUTBOX_BIGQUERY_PROJECT = os.environ.get("BIGQUERY_PROJECT", "")
# Never an emulator in production, whatever the environment says.
OUTBOX_BIGQUERY_EMULATOR_URL = ""
OUTBOX_BIGQUERY_EMULATOR_GRPC = ""

# Collected into the image at build time (Dockerfile), hashed names cached for a year.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
