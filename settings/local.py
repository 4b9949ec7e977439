"""Developer machine: DEBUG on, this machine's PostgreSQL and Redis (defaults in base)."""

from settings.base import *  # noqa: F403
from settings.env import env_bool, env_str

DEBUG = env_bool("DEBUG", True)
# The bqemulator that `make run` starts: analytics events are exported for real, locally.
OUTBOX_BIGQUERY_EMULATOR_URL = env_str("BIGQUERY_EMULATOR_URL", "http://127.0.0.1:9050")

# No LLM locally: the deterministic local backend (not a language model, see docs/conversations.md).
QUEEN_LLM_BACKEND = env_str("QUEEN_LLM_BACKEND", "hive.llm.LocalBackend")
# The payment processor's test mode signs local webhooks with this (never used in production).
GOVERNANCE_PAYMENT_WEBHOOK_SECRET = env_str("PAYMENT_WEBHOOK_SECRET", "local-webhook-secret")
OUTBOX_BIGQUERY_EMULATOR_GRPC = env_str("BIGQUERY_EMULATOR_GRPC", "127.0.0.1:9060")
