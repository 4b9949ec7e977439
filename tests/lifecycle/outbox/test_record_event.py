import decimal
import uuid

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.urls import reverse

from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.services import record_event

pytestmark = pytest.mark.django_db(transaction=True)


def test_record_event__row_written_with_kind_and_payload():
    event_id = record_event(kind="bee_decision", payload={"bee": "worker-1", "amount": decimal.Decimal("1.50")})

    event = OutboxEvent.objects.get(id=event_id)
    assert isinstance(event_id, uuid.UUID)
    assert event.kind == "bee_decision"
    assert event.payload == {"bee": "worker-1", "amount": "1.50"}
    assert event.state == "pending"
    assert event.table == "bee_decisions"


def test_record_event__rolled_back_transaction_leaves_no_event():
    def change_that_fails() -> None:
        with transaction.atomic():
            record_event(kind="llm_conversation", payload={"turn": 1})
            raise RuntimeError("the change that caused the event failed")

    with pytest.raises(RuntimeError):
        change_that_fails()

    assert OutboxEvent.objects.count() == 0


def test_record_event__committed_with_the_callers_transaction():
    with transaction.atomic():
        User.objects.create(username="alice")
        event_id = record_event(kind="lifecycle_event", payload={"state": "ready"})

    assert OutboxEvent.objects.filter(id=event_id).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "page_view", "payload": {}}, "kind: unknown event kind 'page_view'"),
        ({"kind": "bee_decision", "payload": ["not", "a", "dict"]}, "payload: must be a dict"),
        ({"kind": "bee_decision", "payload": {"x": object()}}, "payload: not JSON-serializable"),
        ({"kind": "bee_decision", "payload": {"x": float("nan")}}, "payload: Out of range float values"),
        ({"kind": "bee_decision", "payload": {"x": {"y": "a\x00b"}}}, "payload: contains a NUL character"),
        ({"kind": "bee_decision", "payload": {"x": "\\\x00"}}, "payload: contains a NUL character"),
    ],
)
def test_record_event__bad_input_raises_value_error_and_keeps_callers_transaction(kwargs, message):
    with transaction.atomic():
        User.objects.create(username="bob")
        with pytest.raises(ValueError, match=message):
            record_event(**kwargs)
        # The failed call ran no SQL, so the caller's transaction is still usable.
        User.objects.create(username="carol")

    assert User.objects.count() == 2
    assert OutboxEvent.objects.count() == 0


def test_outbox_admin__quarantined_row_listed_with_its_error(client):
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    event_id = record_event(kind="bee_decision", payload={"confidence": "very"})
    OutboxEvent.objects.filter(id=event_id).update(
        quarantined_at="2026-01-01T00:00:00Z", last_error="Could not parse 'very' as DOUBLE"
    )
    client.force_login(admin)

    listing = client.get(reverse("admin:outbox_outboxevent_changelist") + "?state=quarantined")
    detail = client.get(reverse("admin:outbox_outboxevent_change", args=[event_id]))

    assert listing.status_code == 200
    assert str(event_id) in listing.text
    assert "Could not parse" in listing.text
    assert detail.status_code == 200
    assert "Could not parse &#x27;very&#x27; as DOUBLE" in detail.text


def test_record_event__text_backslash_u0000_is_not_a_nul():
    event_id = record_event(kind="bee_decision", payload={"x": "\\u0000", "y": "\\\\u0000"})

    assert OutboxEvent.objects.get(id=event_id).payload == {"x": "\\u0000", "y": "\\\\u0000"}
