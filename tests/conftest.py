from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from django.test.signals import setting_changed

from core.redis import redis_client
from tests.support.instances import GunicornInstance


@receiver(setting_changed)
def _axes_handler_follows_caches(*, setting: str, **kwargs) -> None:
    """django-axes keeps the handler (and its cache) it built first: a test that points CACHES at
    a Redis that is down would leave every later login talking to that Redis."""
    if setting == "CACHES":
        from axes.handlers.proxy import AxesProxyHandler

        AxesProxyHandler.implementation = None


@pytest.fixture(autouse=True)
def _flush_redis() -> None:
    """Each test starts with an empty Redis database of its own (settings.test picks the db)."""
    redis_client().flushdb()


@pytest.fixture
def service_env(django_db_setup, tmp_path: Path) -> dict[str, str]:
    """Environment for a real service process that uses this test run's database and Redis db."""
    db = connection.settings_dict
    # Named from the TEST settings, not db["NAME"]: outside a django_db test that is still the
    # development database.
    name = db["TEST"]["NAME"]
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    return {
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "DATABASE_URL": url,
        "REDIS_URL": settings.CACHES["default"]["LOCATION"],
        "OMK_RUN_DIR": str(tmp_path / "run"),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "LOG_LEVEL": "WARNING",
        # No BigQuery emulator runs for most tests: with the default sink every stop would spend
        # its export step retrying an unreachable one until the step's cut. Tests of the export
        # itself name the BigQuery sink and the emulator (tests/lifecycle/outbox/conftest.py).
        "OUTBOX_SINK": "tests.support.sinks.RedisSetSink",
    }


@pytest.fixture
def start_instance(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., GunicornInstance]]:
    """Start real gunicorn instances; each is SIGKILLed at the end of the test if still running."""
    started: list[GunicornInstance] = []

    def start(wait_for: str = "/health", **env: str) -> GunicornInstance:
        log = tmp_path / f"gunicorn-{len(started)}.log"
        instance = GunicornInstance({**service_env, **env}, log_path=log)
        started.append(instance)
        return instance.start(wait_for=wait_for)

    yield start
    for instance in started:
        instance.kill()


# --- Users, tokens and API clients ---------------------------------------------------------------


@pytest.fixture
def user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="alice", password="alice-password-1")


@pytest.fixture
def own_queues(user):
    """Creates bee queues owned by `user` (api_client's user): a queue exists before it is used."""
    from hive.services import bee_queue_create

    def create(*names: str) -> None:
        for name in names:
            bee_queue_create(owner=user, name=name)

    return create


@pytest.fixture
def staff_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="staff", password="staff-password-1", is_staff=True)


@pytest.fixture
def api_token(user) -> str:
    from accounts.services import api_token_issue

    return api_token_issue(user=user, name="tests")[1]


@pytest.fixture
def api_client(api_token):
    """A Django test client that sends the bearer token of `user` on every request."""
    from django.test import Client

    return Client(headers={"Authorization": f"Bearer {api_token}"})


@pytest.fixture
def staff_client(staff_user):
    from django.test import Client

    from accounts.services import api_token_issue

    return Client(headers={"Authorization": f"Bearer {api_token_issue(user=staff_user)[1]}"})
