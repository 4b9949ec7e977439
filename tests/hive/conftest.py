import pytest
from django.test import Client


@pytest.fixture
def other_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="bob", password="bob-password-1")


@pytest.fixture
def other_client(other_user):
    from accounts.services import api_token_issue

    return Client(headers={"Authorization": f"Bearer {api_token_issue(user=other_user)[1]}"})


@pytest.fixture
def web_client(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def recovered():
    """Reads (sessions_recovered_total, hive_history_rebuilds_total{reason}) from this process."""
    from prometheus_client import REGISTRY

    def value(reason: str) -> tuple[float, float]:
        total = REGISTRY.get_sample_value("sessions_recovered_total") or 0.0
        by_reason = REGISTRY.get_sample_value("hive_history_rebuilds_total", {"reason": reason}) or 0.0
        return total, by_reason

    return value


@pytest.fixture
def run_replies():
    """Run the queued reply jobs in this process, oldest first, as a worker would; their results."""
    from procrastinate.contrib.django.models import ProcrastinateJob

    from hive.tasks import generate_reply

    def run() -> list[str]:
        results = []
        for job in ProcrastinateJob.objects.filter(task_name="hive.generate_reply", status="todo").order_by("id"):
            results.append(generate_reply(**job.args))
            ProcrastinateJob.objects.filter(pk=job.pk).update(status="succeeded")
        return results

    return run


@pytest.fixture(autouse=True)
def no_reply_jobs(request):
    """procrastinate's tables are not Django's to flush: each database test starts and ends
    without reply jobs (a later test's workers would otherwise run them)."""
    uses_db = bool(request.node.get_closest_marker("django_db")) or "db" in request.fixturenames

    def delete() -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM procrastinate_jobs WHERE task_name = 'hive.generate_reply'")

    if uses_db:
        delete()
    yield
    if uses_db:
        delete()


# Real `manage.py worker` processes, as the lifecycle tests start them.
from tests.lifecycle.conftest import start_worker  # noqa: E402, F401
