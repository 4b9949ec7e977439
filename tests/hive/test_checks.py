import subprocess
import sys
from pathlib import Path

from hive.checks import check_hive_settings


def test_check_hive_settings__defaults_pass():
    assert check_hive_settings(None) == []


def test_check_hive_settings__claim_block_beyond_redis_socket_timeout(settings):
    settings.LIFECYCLE_QUEUE_MAX_BLOCK_MS = 5000
    assert [e.id for e in check_hive_settings(None)] == ["hive.E001"]


def test_check_hive_settings__non_positive_ttls(settings):
    settings.HIVE_BOARD_TTL_SECONDS = 0
    settings.LIFECYCLE_QUEUE_VISIBILITY_TIMEOUT_SECONDS = -1
    assert [e.id for e in check_hive_settings(None)] == ["hive.E002", "hive.E002"]


def test_metrics__sessions_recovered_is_shared_with_a_module_that_defined_it_first():
    # lifecycle.metrics defines sessions_recovered_total too: loading both must not raise.
    code = (
        "from prometheus_client import Counter\n"
        "first = Counter('sessions_recovered_total', 'defined by another module')\n"
        "import hive.metrics\n"
        "assert hive.metrics.sessions_recovered is first\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)
