"""The outbox's settings, each with its default (read through `outbox_settings`).

`outbox_settings.X` reads `settings.OUTBOX_X` or the default below.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Where exported events go: a dotted path to an `OutboxSink` subclass (like EMAIL_BACKEND).
    "SINK": "lifecycle.outbox.sinks.bigquery.BigQuerySink",
    # Rows taken (and locked) per batch by the exporter loop. BigQuery's cost is per job (a load
    # and a MERGE per batch) far more than per row: large batches are what makes throughput.
    "BATCH_SIZE": 10000,
    # Exported rows are deleted after this many days (they are in BigQuery by then).
    "RETENTION_DAYS": 7,
    # Backoff after a failed export of a batch: base * 2**(attempts-1), capped.
    "BACKOFF_BASE_SECONDS": 1.0,
    "BACKOFF_MAX_SECONDS": 300.0,
    # The background loop sleeps this long when it found nothing to export.
    "POLL_INTERVAL_SECONDS": 1.0,
    # BigQuery: project and dataset of the per-kind tables; the emulator URL only locally and in tests.
    "BIGQUERY_PROJECT": "omk-local",
    "BIGQUERY_DATASET": "omk",
    "BIGQUERY_LOCATION": "US",
    "BIGQUERY_EMULATOR_URL": "",
    # Upper bound of one batch's send (the client's own retries would go on for 10 minutes).
    "BIGQUERY_TIMEOUT_SECONDS": 30.0,
    # Each day partition is dropped by BigQuery after this many days (events are kept one year).
    "BIGQUERY_PARTITION_EXPIRATION_DAYS": 365,
    # Typed columns per table, lifted from the payload's top-level keys of the same name:
    # {"bee_decisions": [("bee", "STRING"), ("confidence", "FLOAT64")]}. A payload whose value does
    # not fit its column is rejected by BigQuery, and that event (only) is quarantined.
    "BIGQUERY_COLUMNS": {},
}


class OutboxSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"OUTBOX_{name}", DEFAULTS[name])


outbox_settings = OutboxSettings()
