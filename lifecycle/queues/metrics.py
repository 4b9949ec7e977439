"""Metrics of the bee queues (prometheus-client; multiprocess mode aggregates workers)."""

from prometheus_client import Counter

QUEUE_MESSAGES = Counter(
    "queue_messages",
    "Queue messages by what happened to them: published, claimed (new), redelivered (taken over from "
    "a consumer past the visibility timeout, or handed back by a stopping instance), acked.",
    ["event"],
)
