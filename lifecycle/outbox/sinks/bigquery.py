"""The BigQuery sink: each batch goes through the Storage Write API, one PENDING stream per table.

A pending stream's rows become visible only when the stream is committed, atomically and once:
`stage` creates the stream, appends the rows and finalizes it; the exporter records the stream's
name with the rows in PostgreSQL; `commit` commits it. After a crash anywhere, the recorded name
tells what happened (`recover`): committed, still committable (it is committed then), or gone
(the table is asked which of the events it holds). No query job runs for a batch: nothing reads
the table, so a batch costs the same whatever the table's size, and nothing is billed for reading.

Why not the former staging load + `MERGE ... ON event_id`: the MERGE read the event_id column of
the whole table for every batch (time and bytes billed grew with the table), and each MERGE is a
DML statement that BigQuery queues per table (see docs/outbox.md). Why not streaming inserts with
insertId: their dedupe is best-effort (a re-send after a crash makes a duplicate).

google-cloud-bigquery and -bigquery-storage are imported on first use: they cost start-up time
that web workers, which only record events, never need to pay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES
from lifecycle.outbox.sinks import Event, OutboxSink, RowsRejected, SinkError, Staged
from lifecycle.outbox.sinks.protorows import RowEncoder

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
# The tables' layout: day partitions on created_at (what the recovery lookup and users' queries
# name), clustered on event_id.
PARTITION_FIELD = "created_at"
CLUSTERING = ["event_id"]
# One AppendRows request may carry 10 MB; the rest is room for the request's own fields.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# A table rebuilt into the layout keeps a copy of its former self this long.
BACKUP_TTL = dt.timedelta(days=30)


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


def bigquery_write_client(*, emulator_url: str, emulator_grpc: str):
    """The Storage Write API client: the emulator's gRPC port when there is an emulator."""
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

    if emulator_url:
        if not emulator_grpc:
            # Without it the client would go to Google's endpoint from a machine meant for the emulator.
            raise SinkError("OUTBOX_BIGQUERY_EMULATOR_GRPC is not set (the emulator's gRPC host:port)")
        import grpc  # type: ignore[import-untyped]
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport

        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=grpc.insecure_channel(emulator_grpc)))
    return BigQueryWriteClient()


class _Deadline:
    """What is left of one operation's time: every call, and its client-side retries, gets only
    that (the clients' own retries would go on for 10 to 20 minutes)."""

    def __init__(self, timeout: float | None):
        self.at = time.monotonic() + (timeout or outbox_settings.BIGQUERY_TIMEOUT_SECONDS)

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise SinkError("BigQuery did not answer within the send's time limit")
        return remaining

    def retry(self):
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        # RESOURCE_EXHAUSTED is also how stream-creation quotas answer; ABORTED a concurrent change.
        transient = if_exception_type(
            gexc.ServiceUnavailable, gexc.ResourceExhausted, gexc.Aborted, gexc.InternalServerError
        )
        return Retry(predicate=transient, initial=0.2, maximum=2.0, timeout=self.left())

    def calls(self) -> dict[str, Any]:
        return {"retry": self.retry(), "timeout": self.left()}


@contextlib.contextmanager
def _as_sink_errors() -> Iterator[None]:
    """BigQuery's and the transports' failures as SinkError: the batch is retried later."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except (RowsRejected, SinkError):
        raise
    except gexc.NotFound as exc:
        raise SinkError(f"{exc.message} (run `python manage.py bigquery_setup`)") from exc
    except gexc.RetryError as exc:
        # What the retries ended on says more than that they ended.
        cause = exc.cause or exc
        raise SinkError(f"{type(cause).__name__}: {cause} (retried until the time limit)"[:2000]) from exc
    except (gexc.GoogleAPIError, OSError) as exc:
        raise SinkError(f"{type(exc).__name__}: {exc}"[:2000]) from exc
    except Exception as exc:
        # requests', grpc's and google-auth's transport errors share no base class with the above.
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "google", "grpc"):
            raise SinkError(f"{type(exc).__name__}: {exc}"[:2000]) from exc
        raise


def _table_of(token: str) -> str:
    """`projects/P/datasets/D/tables/T/streams/S` -> `P.D.T`."""
    parts = token.split("/")
    return f"{parts[1]}.{parts[3]}.{parts[5]}"


class BigQuerySink(OutboxSink):
    def __init__(
        self,
        *,
        project: str | None = None,
        dataset: str | None = None,
        emulator_url: str | None = None,
        emulator_grpc: str | None = None,
        columns: dict[str, list[tuple[str, str]]] | None = None,
    ):
        self._project = project
        self._emulator_url = emulator_url if emulator_url is not None else outbox_settings.BIGQUERY_EMULATOR_URL
        self._emulator_grpc = emulator_grpc if emulator_grpc is not None else outbox_settings.BIGQUERY_EMULATOR_GRPC
        self.dataset_name = dataset or outbox_settings.BIGQUERY_DATASET
        self.columns = columns if columns is not None else outbox_settings.BIGQUERY_COLUMNS
        self._encoders: dict[str, RowEncoder] = {}
        # Tables `setup` rebuilt into the layout, with when the rebuild began (the outbox checks
        # what was exported since against the new table: bigquery_setup does).
        self.rebuilt: dict[str, dt.datetime] = {}

    @cached_property
    def client(self):
        return bigquery_client(project=self._project, emulator_url=self._emulator_url)

    @cached_property
    def write_client(self):
        return bigquery_write_client(emulator_url=self._emulator_url, emulator_grpc=self._emulator_grpc)

    @property
    def dataset_id(self) -> str:
        return f"{self.client.project}.{self.dataset_name}"

    def table_columns(self, table: str) -> list[tuple[str, str]]:
        return [(name, type_) for name, type_, _mode in BASE_COLUMNS] + list(self.columns.get(table, []))

    def schema(self, table: str) -> list:
        from google.cloud import bigquery

        fields = [bigquery.SchemaField(name, type_, mode=mode) for name, type_, mode in BASE_COLUMNS]
        fields += [bigquery.SchemaField(name, type_, mode="NULLABLE") for name, type_ in self.columns.get(table, [])]
        return fields

    # --- setup -------------------------------------------------------------------------------

    def setup(self) -> list[str]:
        """Create the dataset and the per-kind tables, or bring them up to date (columns, layout,
        partition expiration) without losing a row. Idempotent."""
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
        for table_name in KIND_TABLES.values():
            table_id = f"{self.dataset_id}.{table_name}"
            try:
                table = self.client.get_table(table_id, **bounded)
            except NotFound:
                self.client.create_table(self._new_table(table_id, self.schema(table_name)), exists_ok=True, **bounded)
                done.append(f"table {table_id}: created")
                continue
            done += self._update_table(table_name, table, bounded)
        return done

    def _new_table(self, table_id: str, schema: list):
        from google.cloud import bigquery

        table = bigquery.Table(table_id, schema=schema)
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY,
            field=PARTITION_FIELD,
            expiration_ms=outbox_settings.BIGQUERY_PARTITION_EXPIRATION_DAYS * 86_400_000,
        )
        table.clustering_fields = CLUSTERING
        return table

    def _update_table(self, table_name: str, table, bounded: dict) -> list[str]:
        table_id = f"{self.dataset_id}.{table_name}"
        done = []
        wanted = self.schema(table_name)
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
                table = self.client.update_table(table, ["schema"], **bounded)
            done.append(f"table {table_id}: added {', '.join(field.name for field in missing)}")
        partitioning = table.time_partitioning
        if partitioning is None or partitioning.type_ != "DAY" or partitioning.field != PARTITION_FIELD:
            # BigQuery changes no table's partitioning in place: the rows move to a new table.
            return [*done, self._rebuild(table_name, table, bounded)]
        changed = []
        expiration_ms = outbox_settings.BIGQUERY_PARTITION_EXPIRATION_DAYS * 86_400_000
        if partitioning.expiration_ms != expiration_ms:
            partitioning.expiration_ms = expiration_ms
            changed.append("time_partitioning")
        if list(table.clustering_fields or []) != CLUSTERING:
            # In place: new data is clustered at once, BigQuery reclusters the rest in the background.
            table.clustering_fields = CLUSTERING
            changed.append("clustering_fields")
        if changed:
            self.client.update_table(table, changed, **bounded)
            done.append(f"table {table_id}: updated ({', '.join(changed)})")
        elif not missing:
            done.append(f"table {table_id}: up to date")
        return done

    def _rebuild(self, table_name: str, table, bounded: dict) -> str:
        """Move a table's rows into the layout: a backup copy (a copy job: free, one snapshot),
        a new table in the layout filled from it and verified, then the new one in the old's place.

        Exporters meanwhile fail on the missing table for a moment (their rows wait, pending) or
        write into the old table after the snapshot; those rows are found and exported again by
        `outbox_reexport_missing` from `self.rebuilt` (bigquery_setup runs it).
        """
        from google.cloud import bigquery

        table_id = f"{self.dataset_id}.{table_name}"
        started = dt.datetime.now(dt.UTC)
        stamp = started.strftime("%Y%m%d%H%M%S")
        backup_id = f"{table_id}__before_layout_{stamp}"
        staging_id = f"{table_id}__layout_{stamp}"
        # The wanted columns first, then any other the table has (nothing of it is dropped).
        wanted = self.schema(table_name)
        names = {field.name for field in wanted}
        schema = wanted + [field for field in table.schema if field.name not in names]
        self.client.copy_table(table_id, backup_id, **bounded).result(**bounded)
        with contextlib.suppress(Exception):
            backup = self.client.get_table(backup_id, **bounded)
            backup.expires = started + BACKUP_TTL
            self.client.update_table(backup, ["expires"], **bounded)
        self.client.create_table(self._new_table(staging_id, schema), **bounded)
        columns = ", ".join(f"`{field.name}`" for field in table.schema)
        self.client.query(f"INSERT INTO `{staging_id}` ({columns}) SELECT {columns} FROM `{backup_id}`").result(
            **bounded
        )
        expected, moved = self._count(backup_id, bounded), self._count(staging_id, bounded)
        if moved != expected:
            raise SinkError(f"rebuilding {table_id}: {moved} of {expected} rows copied; nothing replaced")
        self.client.delete_table(table_id, **bounded)
        # A copy into a table that does not exist creates it with the source's layout.
        job_config = bigquery.CopyJobConfig(write_disposition=bigquery.WriteDisposition.WRITE_EMPTY)
        self.client.copy_table(staging_id, table_id, job_config=job_config, **bounded).result(**bounded)
        self.client.delete_table(staging_id, not_found_ok=True, **bounded)
        self.rebuilt[table_name] = started
        return (
            f"table {table_id}: rebuilt into day partitions on {PARTITION_FIELD}, clustered on "
            f"{', '.join(CLUSTERING)} ({expected} rows; the former table is kept until "
            f"{(started + BACKUP_TTL).date()} as {backup_id})"
        )

    def _count(self, table_id: str, bounded: dict) -> int:
        return next(iter(self.client.query(f"SELECT COUNT(*) FROM `{table_id}`").result(**bounded)))[0]

    # --- export ------------------------------------------------------------------------------

    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Stage and commit at once (for direct use; the exporter records the streams in between)."""
        deadline = _Deadline(timeout)
        failed = self.commit([s.token for s in self.stage(events, timeout=deadline.left())], timeout=deadline.left())
        if failed:
            raise SinkError("; ".join(failed.values()))

    def _row(self, event: Event, exported_at: dt.datetime) -> dict[str, Any]:
        row: dict[str, Any] = {
            "event_id": str(event.event_id),
            "kind": event.kind,
            "created_at": event.created_at,
            "exported_at": exported_at,
            "payload": event.payload,
        }
        for name, _type in self.columns.get(event.table, []):
            if name in event.payload:
                row[name] = event.payload[name]
        return row

    def _encoder(self, table: str) -> RowEncoder:
        if table not in self._encoders:
            self._encoders[table] = RowEncoder(self.table_columns(table))
        return self._encoders[table]

    def stage(self, events: Sequence[Event], *, timeout: float | None = None) -> list[Staged]:
        """One PENDING stream per table, rows appended and the stream finalized: ready, not visible.

        Every row is encoded first: a value that does not fit its column rejects that event
        before any stream exists. A stream left behind by a failure is never committed, and
        BigQuery drops an uncommitted stream's rows.
        """
        deadline = _Deadline(timeout)
        exported_at = dt.datetime.now(dt.UTC)
        by_table: dict[str, list[tuple[Event, bytes]]] = {}
        rejected: dict[uuid.UUID, str] = {}
        for event in events:
            try:
                encoded = self._encoder(event.table).encode(self._row(event, exported_at))
            except ValueError as exc:
                rejected[event.event_id] = str(exc)
                continue
            by_table.setdefault(event.table, []).append((event, encoded))
        if rejected:
            raise RowsRejected(f"{len(rejected)} event(s) do not fit their table's columns", rejected)
        with _as_sink_errors():
            return [self._stage_table(table, rows, deadline) for table, rows in sorted(by_table.items())]

    def _stage_table(self, table: str, rows: list[tuple[Event, bytes]], deadline: _Deadline) -> Staged:
        from google.cloud.bigquery_storage_v1 import types

        write = self.write_client
        parent = f"projects/{self.client.project}/datasets/{self.dataset_name}/tables/{table}"
        stream = write.create_write_stream(
            parent=parent, write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING), **deadline.calls()
        )
        have = {field.name for field in stream.table_schema.fields}
        absent = [name for name, _type in self.table_columns(table) if name not in have]
        if stream.table_schema.fields and absent:
            raise SinkError(f"table {table} has no column {', '.join(absent)} (run `python manage.py bigquery_setup`)")
        encoder = self._encoder(table)
        chunks: list[tuple[int, list[bytes]]] = []
        size = 0
        for index, (_event, encoded) in enumerate(rows):
            if not chunks or size + len(encoded) > MAX_REQUEST_BYTES:
                chunks.append((index, []))
                size = 0
            chunks[-1][1].append(encoded)
            size += len(encoded) + 4
        requests = [
            types.AppendRowsRequest(
                # The stream on every request (the emulator binds each one); the schema on the first.
                write_stream=stream.name,
                offset=start,
                proto_rows=types.AppendRowsRequest.ProtoData(
                    rows=types.ProtoRows(serialized_rows=chunk),
                    writer_schema=types.ProtoSchema(proto_descriptor=encoder.descriptor) if n == 0 else None,
                ),
            )
            for n, (start, chunk) in enumerate(chunks)
        ]
        responses = list(write.append_rows(iter(requests), timeout=deadline.left()))
        for (start, _chunk), response in zip(chunks, responses, strict=False):
            self._check_append(response, rows, start)
        if len(responses) != len(requests):
            raise SinkError(f"AppendRows answered {len(responses)} of {len(requests)} requests")
        finalized = write.finalize_write_stream(name=stream.name, **deadline.calls())
        if finalized.row_count != len(rows):
            raise SinkError(f"stream {stream.name} holds {finalized.row_count} of {len(rows)} rows")
        return Staged(token=stream.name, event_ids=tuple(event.event_id for event, _encoded in rows))

    @staticmethod
    def _check_append(response, rows: list[tuple[Event, bytes]], start: int) -> None:
        import grpc

        if response.row_errors:
            # BigQuery names the rows it refuses (their index in the request): only those are bad.
            errors = {rows[start + e.index][0].event_id: e.message or str(e.code) for e in response.row_errors}
            raise RowsRejected(f"BigQuery refused {len(errors)} row(s)", errors)
        code = response.error.code if response.error else 0
        if code == grpc.StatusCode.INVALID_ARGUMENT.value[0]:
            raise RowsRejected(response.error.message[:2000] or "BigQuery refused the rows")
        if code:
            raise SinkError(f"AppendRows failed (code {code}): {response.error.message}"[:2000])

    def commit(self, tokens: Sequence[str], *, timeout: float | None = None) -> dict[str, str]:
        """Commit each stream (one BatchCommitWriteStreams per table: a commit names one table).
        Already committed counts as committed: whoever commits a stream first, it is visible once."""
        from google.cloud.bigquery_storage_v1 import types

        deadline = _Deadline(timeout)
        failed: dict[str, str] = {}
        unreachable = ""
        for token in tokens:
            if unreachable:
                # The call itself failed: the others would only wait for the same time limit.
                failed[token] = unreachable
                continue
            try:
                with _as_sink_errors():
                    response = self.write_client.batch_commit_write_streams(
                        request=types.BatchCommitWriteStreamsRequest(
                            parent=token.split("/streams/")[0], write_streams=[token]
                        ),
                        **deadline.calls(),
                    )
            except SinkError as exc:
                failed[token] = unreachable = str(exc)
                continue
            if response.commit_time:
                continue
            errors = [
                e
                for e in response.stream_errors
                if e.code != types.StorageError.StorageErrorCode.STREAM_ALREADY_COMMITTED
            ]
            if errors:
                failed[token] = "; ".join(f"{e.code.name}: {e.error_message}" for e in errors)[:2000]
        return failed

    def recover(self, token: str, events: Sequence[Event], *, timeout: float | None = None) -> set[uuid.UUID]:
        """Committed (its commit time) -> all; committable -> committed now, all; otherwise (gone,
        or a state the API does not explain) the table is asked which events it holds."""
        from google.api_core import exceptions as gexc

        deadline = _Deadline(timeout)
        everything = {event.event_id for event in events}
        with _as_sink_errors():
            try:
                stream = self.write_client.get_write_stream(name=token, **deadline.calls())
            except gexc.NotFound:
                stream = None
        if stream is not None:
            if stream.commit_time:
                return everything
            if not self.commit([token], timeout=deadline.left()):
                return everything
        return self.present(_table_of(token), events, timeout=deadline.left())

    def present(self, table_id: str, events: Sequence[Event], *, timeout: float | None = None) -> set[uuid.UUID]:
        """Which of the events `table_id` holds: one query naming only the events' days (BigQuery
        reads those partitions only) and their ids. Only for recovery, never per batch."""
        from google.cloud import bigquery

        if not events:
            return set()
        deadline = _Deadline(timeout)
        sql = (
            f"SELECT event_id FROM `{table_id}` WHERE ({partition_condition(e.created_at for e in events)}) "
            "AND event_id IN UNNEST(@ids)"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", [str(e.event_id) for e in events])]
        )
        with _as_sink_errors():
            found = self.client.query(sql, job_config=config, **deadline.calls()).result(**deadline.calls())
            return {uuid.UUID(row.event_id) for row in found}

    def close(self) -> None:
        if "write_client" in self.__dict__:
            with contextlib.suppress(Exception):
                self.write_client.transport.close()
            del self.__dict__["write_client"]
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]


def partition_condition(moments: Iterable[dt.datetime], column: str = PARTITION_FIELD) -> str:
    """A condition on `column` naming the UTC days of `moments` with constants, one range per run
    of consecutive days: the form BigQuery prunes day partitions by before it reads anything."""
    days = sorted({moment.astimezone(dt.UTC).date() for moment in moments})
    runs: list[list[dt.date]] = []
    for day in days:
        if runs and (day - runs[-1][1]).days == 1:
            runs[-1][1] = day
        else:
            runs.append([day, day])

    def at(day: dt.date) -> str:
        return f"TIMESTAMP '{day.isoformat()} 00:00:00+00'"

    return " OR ".join(
        f"({column} >= {at(first)} AND {column} < {at(last + dt.timedelta(days=1))})" for first, last in runs
    )
