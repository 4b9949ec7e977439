"""The wake-up's two ends without a worker: what a web request sends (debounced, best effort,
only for committed work) and what the worker's endpoint refuses."""

import http.server
import threading
from collections.abc import Iterator

import pytest

from core.redis import redis_client
from hive.models import Conversation
from lifecycle.wake import (
    DEBOUNCE_KEY,
    EVENT_DEBOUNCE_KEY,
    PENDING_KEY,
    TOKEN_HEADER,
    wake_pending_after_release,
    wake_worker,
)
from tests.support.instances import free_port

TOKEN = "wake-secret"


class Recorder(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        type(self).received.append({"path": self.path, **dict(self.headers)})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def worker_stub(settings) -> Iterator[type[Recorder]]:
    """A stand-in for the worker service that records each wake-up."""
    Recorder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.LIFECYCLE_WAKE_URL = f"http://127.0.0.1:{server.server_port}/internal/wake"
    settings.LIFECYCLE_WAKE_TOKEN = TOKEN
    yield Recorder
    server.shutdown()
    server.server_close()


def _received(stub, count: int) -> list[dict]:
    from tests.support.workers import wait_for

    return wait_for(lambda: stub.received if len(stub.received) >= count else None, timeout=5)


def test_wake_worker__off_without_a_url(settings):
    settings.LIFECYCLE_WAKE_URL = ""
    assert wake_worker() == "off"
    assert not redis_client().exists(PENDING_KEY)


def test_wake_worker__sent_once_per_debounce_and_again_once_the_drain_released_it(worker_stub):
    client = redis_client()
    assert wake_worker() == "sent"
    (request,) = _received(worker_stub, 1)
    assert request["path"] == "/internal/wake"
    assert request[TOKEN_HEADER] == TOKEN
    assert wake_worker() == "debounced"
    assert client.exists(PENDING_KEY)
    assert client.exists(DEBOUNCE_KEY)
    # The drain, about to exit, drops the debounce and sees the mark: one more round.
    assert wake_pending_after_release(client)
    assert not client.exists(DEBOUNCE_KEY)
    assert wake_worker() == "sent"
    _received(worker_stub, 2)


def test_wake_worker__events_alone_wake_at_most_once_per_event_debounce_and_mark_nothing(worker_stub):
    client = redis_client()
    assert wake_worker(urgent=False) == "sent"
    assert wake_worker(urgent=False) == "debounced"
    # No pending mark: a drain is not kept going round after round by a trickle of events.
    assert not client.exists(PENDING_KEY)
    assert 290_000 < client.pttl(EVENT_DEBOUNCE_KEY) <= 300_000
    # A job is not held back by the events' debounce.
    assert wake_worker() == "sent"
    _received(worker_stub, 2)


def test_wake_worker__unreachable_worker_is_no_error_and_the_next_request_tries_again(settings):
    settings.LIFECYCLE_WAKE_URL = f"http://127.0.0.1:{free_port()}/internal/wake"
    assert wake_worker() == "failed"
    client = redis_client()
    assert client.exists(PENDING_KEY), "the drain that does run sees the work was announced"
    assert not client.exists(DEBOUNCE_KEY)
    assert wake_worker() == "failed"


@pytest.mark.django_db(transaction=True)
def test_middleware__wakes_after_committed_work_only(worker_stub, api_client, user):
    conversation = Conversation.objects.create(owner=user)
    turns = f"/api/conversations/{conversation.id}/turns/"
    # No work: a read, and a refused write (nothing committed).
    assert api_client.get(turns).status_code == 200
    bad = api_client.post(turns, {"role": "queen", "content": "x"}, content_type="application/json")
    assert bad.status_code in (400, 422)
    assert worker_stub.received == []
    created = api_client.post(turns, {"role": "user", "content": "Hello"}, content_type="application/json")
    assert created.status_code == 201
    _received(worker_stub, 1)


@pytest.mark.django_db(transaction=True)
def test_middleware__an_unreachable_worker_does_not_fail_the_request(settings, api_client, user):
    settings.LIFECYCLE_WAKE_URL = f"http://127.0.0.1:{free_port()}/internal/wake"
    conversation = Conversation.objects.create(owner=user)
    response = api_client.post(
        f"/api/conversations/{conversation.id}/turns/",
        {"role": "user", "content": "Hello"},
        content_type="application/json",
    )
    assert response.status_code == 201


def test_wake_view__refuses_without_serving_with_a_get_or_without_the_token(client, settings):
    settings.LIFECYCLE_WAKE_TOKEN = TOKEN
    settings.LIFECYCLE_WAKE_SERVE = False
    assert client.post("/internal/wake", headers={TOKEN_HEADER: TOKEN}).status_code == 404
    settings.LIFECYCLE_WAKE_SERVE = True
    assert client.get("/internal/wake", headers={TOKEN_HEADER: TOKEN}).status_code == 405
    assert client.post("/internal/wake").status_code == 403
    assert client.post("/internal/wake", headers={TOKEN_HEADER: "wrong"}).status_code == 403
    settings.LIFECYCLE_WAKE_TOKEN = ""
    assert client.post("/internal/wake", headers={TOKEN_HEADER: ""}).status_code == 403
