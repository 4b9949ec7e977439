"""The /metrics aggregation over the processes' sample files (multiprocess mode)."""

import os
import struct
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from lifecycle.metrics import WrittenFilesCollector

# A process that counts, as a gunicorn worker does: its values go to files in the directory.
WRITER = """
from prometheus_client import Counter, Gauge
Counter("probe_requests", "", ("route",)).labels("/").inc(3)
Gauge("probe_in_flight", "", multiprocess_mode="livesum").set(2)
"""


@pytest.fixture
def samples_dir(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WRITER], env=env, check=True)
    return tmp_path


def _scrape(collector_class, path) -> bytes:
    registry = CollectorRegistry()
    collector_class(registry, str(path))
    return generate_latest(registry)


def test_written_files_collector__same_scrape_as_the_stock_collector(samples_dir):
    text = _scrape(WrittenFilesCollector, samples_dir)
    assert b'probe_requests_total{route="/"} 3.0' in text
    assert b"probe_in_flight 2.0" in text
    assert text == _scrape(MultiProcessCollector, samples_dir)


def test_written_files_collector__a_file_being_created_does_not_fail_the_scrape(samples_dir):
    # Created and not yet sized: what a scrape sees while a worker counts its first request.
    (samples_dir / "counter_4242.db").touch()
    (samples_dir / "gauge_livesum_4242.db").touch()
    with pytest.raises(struct.error):  # the stock collector's behaviour, worked around
        _scrape(MultiProcessCollector, samples_dir)
    text = _scrape(WrittenFilesCollector, samples_dir)
    assert b'probe_requests_total{route="/"} 3.0' in text
    assert b"probe_in_flight 2.0" in text
