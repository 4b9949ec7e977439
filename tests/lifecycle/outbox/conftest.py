import uuid
from collections.abc import Iterator

import pytest

from lifecycle.outbox.exporter import reset_sink
from lifecycle.outbox.sinks.bigquery import BigQuerySink
from tests.support.bqemulator import BigQueryEmulator


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One real local BigQuery for the test session, on free ports (9050/9060 stay `make run`'s)."""
    emulator = BigQueryEmulator(tmp_path_factory.mktemp("bqemulator"))
    emulator.start()
    yield emulator
    emulator.stop()


class BigQueryTables:
    """The per-kind tables of one test's own dataset, and what users would query in them."""

    def __init__(self, sink: BigQuerySink):
        self.sink = sink
        self.client = sink.client
        self.dataset_id = sink.dataset_id

    def query(self, sql: str) -> list:
        return list(self.client.query(sql.replace("{dataset}", self.dataset_id)).result())

    def event_ids(self, table: str) -> list[str]:
        return [row.event_id for row in self.query(f"SELECT event_id FROM `{{dataset}}.{table}`")]


@pytest.fixture
def bigquery(bigquery_emulator: BigQueryEmulator, settings) -> Iterator[BigQueryTables]:
    """A fresh dataset per test (created by the sink's setup) that the exporter writes to."""
    settings.OUTBOX_SINK = "lifecycle.outbox.sinks.bigquery.BigQuerySink"
    settings.OUTBOX_BIGQUERY_EMULATOR_URL = bigquery_emulator.url
    settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = bigquery_emulator.grpc_address
    settings.OUTBOX_BIGQUERY_PROJECT = bigquery_emulator.project
    settings.OUTBOX_BIGQUERY_DATASET = f"test_{uuid.uuid4().hex[:12]}"
    sink = BigQuerySink()
    sink.setup()
    yield BigQueryTables(sink)
    sink.client.delete_dataset(sink.dataset_id, delete_contents=True, not_found_ok=True)
    sink.close()
    reset_sink()


@pytest.fixture
def exporter_env(service_env: dict[str, str], bigquery: BigQueryTables, bigquery_emulator, settings) -> dict[str, str]:
    """Environment of a separate exporter process on this test's database and BigQuery dataset."""
    return {
        **service_env,
        "OUTBOX_SINK": "lifecycle.outbox.sinks.bigquery.BigQuerySink",
        "BIGQUERY_EMULATOR_URL": bigquery_emulator.url,
        "BIGQUERY_EMULATOR_GRPC": bigquery_emulator.grpc_address,
        "BIGQUERY_PROJECT": bigquery_emulator.project,
        "BIGQUERY_DATASET": settings.OUTBOX_BIGQUERY_DATASET,
    }
