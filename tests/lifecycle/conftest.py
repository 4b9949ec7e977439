from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.workers import WorkerProcess


@pytest.fixture
def start_worker(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real `manage.py worker` processes; each is SIGKILLed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(
            {**service_env, "PROCRASTINATE_IMPORT_PATHS": "tests.support.tasks", "PYTHONUNBUFFERED": "1", **env}, log
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
    if started:
        # procrastinate's tables are not Django-managed, so the test's flush leaves them: a job a
        # test left queued or running (handed back at SIGTERM, say) would be run by the next
        # test's worker, ahead of that test's own.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE procrastinate_jobs CASCADE")
