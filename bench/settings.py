"""Settings for bench/votes.py's server: the service's own settings plus the bench's views (bench/urls.py)."""

from settings.local import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["*"]
