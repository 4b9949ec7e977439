"""Metrics of the sessions in Redis (prometheus-client; multiprocess mode aggregates workers)."""

from prometheus_client import Counter, Gauge

SESSIONS_RECOVERED = Counter(
    "sessions_recovered", "Sessions recovered after their instance or Redis went away (e.g. hot histories rebuilt)"
)
# Reachable sessions as counted by the last recovery pass (any process).
SESSIONS_ACTIVE = Gauge(
    "sessions_active", "Sessions reachable in Redis at the last recovery pass", multiprocess_mode="mostrecent"
)
