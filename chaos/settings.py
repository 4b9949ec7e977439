"""Settings of the service processes a chaos run starts (and of the harness's own checker).

The production code paths with this machine's addresses; only timings are shortened so that
recovery (visibility timeouts, heartbeats, lock TTLs) happens within a run of a minute.
"""

from settings.base import *  # noqa: F403
from settings.env import env_str

DEBUG = False
ALLOWED_HOSTS = ["*"]

# A message a killed consumer held comes back after this many seconds (production: 60).
QUEUES_VISIBILITY_TIMEOUT_SECONDS = 5

# The run creates and logs in a dozen users at start: a slow password hash on two shared cores
# would spend seconds of the CI budget on set-up, and hashing is not what the run tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A lock lease short enough that the SIGSTOP fault (--pause-seconds, 5 s) outlives it: the paused
# holder's late write must then be refused by the fencing token.
LOCKS_TTL = 3.0

# The bqemulator the run starts beside the service.
OUTBOX_BIGQUERY_EMULATOR_URL = env_str("BIGQUERY_EMULATOR_URL", "http://127.0.0.1:9050")

# No LLM reachable: the Queen's replies come from the deterministic local backend (not a model),
# taking 0.3 s each so that a killed worker is often caught in the middle of one.
QUEEN_LLM_BACKEND = env_str("QUEEN_LLM_BACKEND", "hive.llm.LocalBackend")
QUEEN_LOCAL_DELAY = 0.3
QUEEN_BACKOFF_SECONDS = 0.5
OUTBOX_BIGQUERY_EMULATOR_GRPC = env_str("BIGQUERY_EMULATOR_GRPC", "127.0.0.1:9060")
# The run drains the outbox at its end: a trickle of events is exported after 1 s, not 10.
OUTBOX_BATCH_LINGER_SECONDS = 1.0

# The harness plays the payment processor: it signs each purchase's webhook with this secret.
GOVERNANCE_PAYMENT_WEBHOOK_SECRET = env_str("PAYMENT_WEBHOOK_SECRET", "chaos-webhook-secret")

# Machine-driven load: each client posts on the board far more often than a person (production
# keeps HIVE_BOARD_MAX_POSTS_PER_HOUR's default).
HIVE_BOARD_MAX_POSTS_PER_HOUR = 1_000_000
