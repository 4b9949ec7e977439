"""Prometheus metrics of the outbox (prometheus-client; multiprocess-safe gauges)."""

from prometheus_client import Counter, Gauge

# Every exporter process sets the same database-wide figure: the most recent live value is the truth.
OUTBOX_PENDING = Gauge(
    "outbox_pending",
    "Outbox events not exported yet (quarantined ones excluded).",
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST_PENDING_SECONDS = Gauge(
    "outbox_oldest_pending_seconds",
    "Age of the oldest outbox event not exported yet (0 when none).",
    multiprocess_mode="livemostrecent",
)
OUTBOX_QUARANTINED = Gauge(
    "outbox_quarantined",
    "Outbox events set aside because the sink rejected them.",
    multiprocess_mode="livemostrecent",
)
OUTBOX_EXPORTED = Counter("outbox_exported_total", "Outbox events exported to the sink.", ["kind"])
OUTBOX_EXPORT_FAILURES = Counter(
    "outbox_export_failures_total",
    "Failed exports: `batch` a whole batch to retry later, `rejected` an event quarantined.",
    ["reason"],
)
