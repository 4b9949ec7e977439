"""Hive metrics (prometheus-client; multiprocess mode aggregates counters across workers).

A rebuilt hot history is a recovered session too: it counts into the sessions app's
`sessions_recovered_total` as well as into `hive_history_rebuilds_total`.
"""

from prometheus_client import Counter

history_rebuilds = Counter(
    "hive_history_rebuilds",
    "Conversation hot histories rebuilt from PostgreSQL, by reason: missing (lost entirely: expiry, "
    "Redis restart) or incomplete (some turns missing).",
    ["reason"],
)
