"""Settings of the service processes a chaos run starts (and of the harness's own checker).

The production code paths with this machine's addresses; only timings are shortened so that
recovery (visibility timeouts, heartbeats, lock TTLs) happens within a run of a minute.
"""

from settings.base import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["*"]

# A message a killed consumer held comes back after this many seconds (production: 60).
LIFECYCLE_QUEUE_VISIBILITY_TIMEOUT_SECONDS = 5
