"""Metrics of the idempotency keys (prometheus-client; multiprocess mode aggregates workers)."""

from prometheus_client import Counter

IDEMPOTENT_REPLAYS = Counter(
    "idempotency_replays",
    "Keyed requests answered with the stored response of an earlier request with the same key "
    "(a client's retry, or a twin sent at once), by outcome: replayed, or key_reused (another request).",
    ["outcome"],
)
