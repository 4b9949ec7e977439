"""Hive metrics (prometheus-client; multiprocess mode aggregates counters across workers)."""

from prometheus_client import Counter

sessions_recovered = Counter(
    "sessions_recovered",
    "Conversation hot histories rebuilt from PostgreSQL because Redis had lost them (missing) "
    "or part of them (incomplete).",
    ["reason"],
)
