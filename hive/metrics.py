"""Hive metrics (prometheus-client; multiprocess mode aggregates counters across workers).

A rebuilt hot history is a recovered session too: it counts into the sessions app's
`sessions_recovered_total` as well as into `hive_history_rebuilds_total`.

The reply metrics are the job worker's (its WORKER_METRICS_PORT), where replies are generated.
"""

from prometheus_client import Counter, Histogram

history_rebuilds = Counter(
    "hive_history_rebuilds",
    "Conversation hot histories rebuilt from PostgreSQL, by reason: missing (lost entirely: expiry, "
    "Redis restart) or incomplete (some turns missing).",
    ["reason"],
)

replies_generated = Counter("hive_replies_generated", "The Queen's replies generated and appended.")
replies_retried = Counter("hive_replies_retried", "Failed LLM calls for a reply that is retried with backoff.")
replies_failed = Counter(
    "hive_replies_failed", "Replies stored as failed after the retries were spent (the user may retry)."
)
replies_handed_back = Counter(
    "hive_replies_handed_back", "Replies whose generation a stopping worker cancelled and handed back."
)
reply_generation_seconds = Histogram(
    "hive_reply_generation_seconds",
    "Seconds one successful LLM call took.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
