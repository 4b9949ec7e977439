"""Hive metrics (prometheus-client; multiprocess mode aggregates counters across workers)."""

from prometheus_client import REGISTRY, Counter


def _shared_counter(name: str, documentation: str) -> Counter:
    # lifecycle.metrics also counts into sessions_recovered_total (its recovery pass) and looks
    # the collector up the same way: whichever module loads first defines it, the other shares it
    # (registering it twice would raise "Duplicated timeseries").
    return REGISTRY._names_to_collectors.get(f"{name}_total") or Counter(name, documentation)


sessions_recovered = _shared_counter(
    "sessions_recovered",
    "Sessions recovered: conversation hot histories rebuilt from PostgreSQL after Redis lost them.",
)

history_rebuilds = Counter(
    "hive_history_rebuilds",
    "Conversation hot histories rebuilt from PostgreSQL, by reason: missing (lost entirely: expiry, "
    "Redis restart) or incomplete (some turns missing).",
    ["reason"],
)
