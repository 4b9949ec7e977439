"""Developer machine: DEBUG on, this machine's PostgreSQL and Redis (defaults in base)."""

from settings.base import *  # noqa: F403
from settings.env import env_bool

DEBUG = env_bool("DEBUG", True)
