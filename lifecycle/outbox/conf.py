"""The outbox's settings: `outbox_settings.X` reads `settings.OUTBOX_X`, else the default here."""

from core.conf import AppSettings


class OutboxSettings(AppSettings):
    prefix = "OUTBOX_"
    # Where exported events go: a dotted path to an `OutboxSink` subclass (like EMAIL_BACKEND).
    SINK: str = "lifecycle.outbox.sinks.bigquery.BigQuerySink"
    # Rows taken (and locked) per batch by the exporter loop. BigQuery's cost is per call (a stream
    # created, appended, finalized, committed per table) far more than per row: large batches are
    # what makes throughput.
    BATCH_SIZE: int = 10000
    # Exported rows are deleted after this many days (they are in BigQuery by then).
    RETENTION_DAYS: int = 7
    # Backoff after a failed export of a batch: base * 2**(attempts-1), capped.
    BACKOFF_BASE_SECONDS: float = 1.0
    BACKOFF_MAX_SECONDS: float = 300.0
    # The background loop sleeps this long when it found nothing to export.
    POLL_INTERVAL_SECONDS: float = 1.0
    # The loop exports a batch smaller than BATCH_SIZE only once its oldest event is this old: a
    # trickle of events makes one batch (a few streams) per LINGER, not one per poll and exporter,
    # which keeps far below BigQuery's quota on stream creations.
    BATCH_LINGER_SECONDS: float = 10.0
    # A batch recorded as staged but not marked exported this long after is taken to be an
    # exporter's that died (or lost BigQuery) and is recovered by any exporter.
    RECOVER_AFTER_SECONDS: float = 60.0
    # BigQuery: project and dataset of the per-kind tables; the emulator URL only locally and in tests.
    BIGQUERY_PROJECT: str = "omk-local"
    BIGQUERY_DATASET: str = "omk"
    BIGQUERY_LOCATION: str = "US"
    BIGQUERY_EMULATOR_URL: str = ""
    # The emulator's gRPC host:port (the Storage Write API); required with BIGQUERY_EMULATOR_URL.
    BIGQUERY_EMULATOR_GRPC: str = ""
    # Upper bound of one batch's send (the client's own retries would go on for 10 minutes).
    BIGQUERY_TIMEOUT_SECONDS: float = 30.0
    # Each day partition is dropped by BigQuery after this many days (events are kept one year).
    BIGQUERY_PARTITION_EXPIRATION_DAYS: int = 365
    # Typed columns per table, lifted from the payload's top-level keys of the same name:
    # {"bee_decisions": [("bee", "STRING"), ("confidence", "FLOAT64")]}. A payload whose value does
    # not fit its column is rejected by BigQuery, and that event (only) is quarantined.
    BIGQUERY_COLUMNS: dict = {}


outbox_settings = OutboxSettings()
