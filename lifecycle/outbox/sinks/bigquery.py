"""The BigQuery sink: each batch is loaded into a staging table, then MERGEd on event_id.

Why not streaming inserts with insertId: BigQuery's insertId dedupe is best-effort (a retry after
about a minute, or any re-send after a crash, makes a duplicate) and the emulator ignores it.
A MERGE that inserts only the event ids the table does not have yet makes a re-sent batch a
no-op, so what users query holds each event once however often a batch is sent.

google-cloud-bigquery is imported on first use: it costs ~0.3 s of start-up that web workers,
which only record events, never need to pay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import time
import uuid
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES
from lifecycle.outbox.sinks import Event, OutboxSink, RowsRejected, SinkError

logger = logging.getLogger(__name__)

# Every per-kind table has these columns; `BIGQUERY_COLUMNS` may add typed columns per table,
# lifted from the payload's top-level keys of the same name.
BASE_COLUMNS: list[tuple[str, str, str]] = [
    ("event_id", "STRING", "REQUIRED"),
    ("kind", "STRING", "REQUIRED"),
    ("created_at", "TIMESTAMP", "REQUIRED"),
    ("exported_at", "TIMESTAMP", "NULLABLE"),
    ("payload", "JSON", "NULLABLE"),
]
STAGING_PREFIX = "_staging_"
# A staging table left behind by an exporter killed mid-batch expires on its own.
STAGING_TTL = dt.timedelta(hours=6)


def bigquery_client(*, project: str | None = None, emulator_url: str | None = None):
    from google.cloud import bigquery

    project = project if project is not None else outbox_settings.BIGQUERY_PROJECT
    emulator_url = emulator_url if emulator_url is not None else outbox_settings.BIGQUERY_EMULATOR_URL
    if emulator_url:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=project or None,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=emulator_url),
        )
    # Production: Application Default Credentials (the workload's service account).
    return bigquery.Client(project=project or None)


class BigQuerySink(OutboxSink):
    def __init__(
        self,
        *,
        project: str | None = None,
        dataset: str | None = None,
        emulator_url: str | None = None,
        columns: dict[str, list[tuple[str, str]]] | None = None,
    ):
        self._project = project
        self._emulator_url = emulator_url
        self.dataset_name = dataset or outbox_settings.BIGQUERY_DATASET
        self.columns = columns if columns is not None else outbox_settings.BIGQUERY_COLUMNS

    @cached_property
    def client(self):
        return bigquery_client(project=self._project, emulator_url=self._emulator_url)

    @property
    def dataset_id(self) -> str:
        return f"{self.client.project}.{self.dataset_name}"

    def schema(self, table: str) -> list:
        from google.cloud import bigquery

        fields = [bigquery.SchemaField(name, type_, mode=mode) for name, type_, mode in BASE_COLUMNS]
        fields += [bigquery.SchemaField(name, type_, mode="NULLABLE") for name, type_ in self.columns.get(table, [])]
        return fields

    # --- setup -------------------------------------------------------------------------------

    def setup(self) -> list[str]:
        """Create the dataset and the per-kind tables, or bring them up to date. Idempotent."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        # Each call gives up after the send timeout instead of the client's 10 minutes of retries.
        limit = outbox_settings.BIGQUERY_TIMEOUT_SECONDS
        bounded = {"retry": DEFAULT_RETRY.with_timeout(limit), "timeout": limit}
        done = []
        dataset = bigquery.Dataset(self.dataset_id)
        dataset.location = outbox_settings.BIGQUERY_LOCATION
        try:
            self.client.get_dataset(self.dataset_id, **bounded)
            done.append(f"dataset {self.dataset_id}: exists")
        except NotFound:
            self.client.create_dataset(dataset, exists_ok=True, **bounded)
            done.append(f"dataset {self.dataset_id}: created")
        expiration_ms = outbox_settings.BIGQUERY_PARTITION_EXPIRATION_DAYS * 86_400_000
        for table_name in KIND_TABLES.values():
            table_id = f"{self.dataset_id}.{table_name}"
            wanted = self.schema(table_name)
            try:
                table = self.client.get_table(table_id, **bounded)
            except NotFound:
                table = bigquery.Table(table_id, schema=wanted)
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field="created_at", expiration_ms=expiration_ms
                )
                table.clustering_fields = ["event_id"]
                self.client.create_table(table, exists_ok=True, **bounded)
                done.append(f"table {table_id}: created")
                continue
            changed = []
            have = {field.name for field in table.schema}
            missing = [field for field in wanted if field.name not in have]
            if missing:
                # Adding NULLABLE columns is the one schema change BigQuery allows in place. DDL
                # first: the emulator's update_table changes only its catalog, not the data.
                for field in missing:
                    self.client.query(
                        f"ALTER TABLE `{table_id}` ADD COLUMN IF NOT EXISTS {field.name} {field.field_type}"
                    ).result(**bounded)
                table = self.client.get_table(table_id, **bounded)
                have = {field.name for field in table.schema}
                if any(field.name not in have for field in missing):
                    table.schema = [*table.schema, *(field for field in missing if field.name not in have)]
                    changed.append("schema")
                else:
                    done.append(f"table {table_id}: added {', '.join(field.name for field in missing)}")
            if table.time_partitioning is not None and table.time_partitioning.expiration_ms != expiration_ms:
                table.time_partitioning.expiration_ms = expiration_ms
                changed.append("time_partitioning")
            if changed:
                self.client.update_table(table, changed, **bounded)
                done.append(f"table {table_id}: updated ({', '.join(changed)})")
            elif not missing:
                done.append(f"table {table_id}: up to date")
        return done

    # --- export ------------------------------------------------------------------------------

    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Load the batch into one staging table, then MERGE it into each kind's table.

        One load and one multi-statement query per batch whatever its kinds: BigQuery's cost
        is per job far more than per row, so this keeps a batch at a few round trips.
        """
        from google.api_core import exceptions as gexc

        deadline = time.monotonic() + (timeout or outbox_settings.BIGQUERY_TIMEOUT_SECONDS)
        tables = sorted({event.table for event in events})
        try:
            self._send(events, tables, deadline=deadline)
        except (RowsRejected, SinkError):
            raise
        except gexc.NotFound as exc:
            raise SinkError(f"{exc.message} (run `python manage.py bigquery_setup`)") from exc
        except (gexc.GoogleAPIError, OSError) as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            # requests' and google-auth's transport errors share no base class with the above.
            if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "google"):
                raise SinkError(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _row(self, event: Event, exported_at: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "event_id": str(event.event_id),
            "kind": event.kind,
            "created_at": event.created_at.isoformat(),
            "exported_at": exported_at,
            "payload": event.payload,
        }
        for name, _type in self.columns.get(event.table, []):
            if name in event.payload:
                row[name] = event.payload[name]
        return row

    def _staging_schema(self, tables: Sequence[str]) -> list:
        fields: dict[str, Any] = {}
        for table in tables:
            for field in self.schema(table):
                fields.setdefault(field.name, field)
        return list(fields.values())

    def _send(self, events: Sequence[Event], tables: Sequence[str], *, deadline: float) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

        # The client's own retries would go on for 10 minutes: bound every call by what is
        # left of this send's time (the exporter retries the batch later, with backoff).
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SinkError("BigQuery did not answer within the send's time limit")
            return remaining

        def retry():
            return DEFAULT_RETRY.with_timeout(left())

        schema = self._staging_schema(tables)
        staging_id = f"{self.dataset_id}.{STAGING_PREFIX}{uuid.uuid4().hex}"
        exported_at = dt.datetime.now(dt.UTC).isoformat()
        body = "\n".join(json.dumps(self._row(event, exported_at), cls=DjangoJSONEncoder) for event in events)
        staging = bigquery.Table(staging_id, schema=schema)
        staging.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
        self.client.create_table(staging, retry=retry(), timeout=left())
        try:
            job_config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                schema=schema,
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            )
            # size=None makes the client use a resumable upload (the emulator handles it;
            # load_table_from_json's multipart upload it does not).
            job = self.client.load_table_from_file(
                io.BytesIO(body.encode()), staging_id, job_config=job_config, num_retries=2, timeout=left()
            )
            try:
                job.result(retry=retry(), timeout=left())
            except gexc.BadRequest as exc:
                # The staging table's schema is ours, so a failed load is about the rows.
                raise RowsRejected(_error_text(exc, job)) from exc
            statements = []
            kinds = {table: kind for kind, table in KIND_TABLES.items()}
            for table in tables:
                names = [field.name for field in self.schema(table)]
                statements.append(
                    f"MERGE `{self.dataset_id}.{table}` T "
                    f"USING (SELECT * FROM `{staging_id}` WHERE kind = '{kinds[table]}') S "
                    "ON T.event_id = S.event_id "
                    f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) "
                    f"VALUES ({', '.join('S.' + name for name in names)})"
                )
            job_retry = DEFAULT_JOB_RETRY.with_timeout(left())
            # jobs.query answers in one round trip when the job is quick (no polling).
            self.client.query(
                ";\n".join(statements), api_method="QUERY", retry=retry(), timeout=left(), job_retry=job_retry
            ).result(retry=retry(), timeout=left(), job_retry=job_retry)
        finally:
            # Best effort: a staging table left behind expires on its own (STAGING_TTL).
            with contextlib.suppress(Exception):
                self.client.delete_table(staging_id, not_found_ok=True, retry=None, timeout=5)

    def staging_tables(self) -> list[str]:
        return [
            table.table_id
            for table in self.client.list_tables(self.dataset_id)
            if table.table_id.startswith(STAGING_PREFIX)
        ]

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]


def _error_text(exc: Exception, job) -> str:
    errors = getattr(job, "errors", None) or []
    messages = [e.get("message", "") for e in errors if isinstance(e, dict)]
    return "; ".join(m for m in messages if m)[:2000] or str(exc)[:2000]
