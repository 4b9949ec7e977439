import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from governance import services
from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.queries import event_insert
from lifecycle.outbox.services import record_event
from tests.support.tokens import funded_stake

pytestmark = pytest.mark.django_db(transaction=True)

# Apart from these, an event written inside another statement equals one from record_event.
PER_EVENT = {"id", "created_at"}


def _insert_columns(sql: str) -> list[str]:
    listed = re.match(r"INSERT INTO \S+ \(([^)]*)\) SELECT ", sql)
    assert listed, sql
    return [column.strip().strip('"') for column in listed.group(1).split(",")]


def _run(sql: str, params: dict) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_event_insert__writes_every_column_of_the_model_and_the_table():
    event = event_insert(kind="bee_decision", payload={"bee": "scout-7"})

    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, OutboxEvent._meta.db_table)
    table = [column.name for column in description]
    model = [field.column for field in OutboxEvent._meta.concrete_fields]
    assert _insert_columns(event.sql) == model
    assert sorted(model) == sorted(table)
    assert sorted(event.params) == sorted(f"outbox_{column}" for column in model)


def test_event_insert__row_equals_record_events_apart_from_id_and_time():
    payload = {"bee": "scout-7", "amount": Decimal("1.50"), "seen": timezone.now()}
    event = event_insert(kind="bee_decision", payload=payload)
    _run(event.sql, event.params)
    recorded_id = record_event(kind="bee_decision", payload=payload)

    inserted = OutboxEvent.objects.filter(id=event.event_id).values().get()
    recorded = OutboxEvent.objects.filter(id=recorded_id).values().get()
    assert {k: v for k, v in inserted.items() if k not in PER_EVENT} == {
        k: v for k, v in recorded.items() if k not in PER_EVENT
    }


def test_event_insert__one_event_per_source_row_with_the_payload_merged():
    event = event_insert(
        kind="lifecycle_event",
        payload={"state": "ready"},
        source="s",
        payload_sql="jsonb_build_object('n', s.n)",
    )
    _run(f"WITH s AS (SELECT 41 AS n), e AS ({event.sql}) SELECT 1", event.params)
    _run(f"WITH s AS (SELECT 1 AS n WHERE false), e AS ({event.sql}) SELECT 1", event.params)

    assert list(OutboxEvent.objects.values_list("id", "payload")) == [(event.event_id, {"state": "ready", "n": 41})]


def test_vote_cast__outbox_row_equals_record_events_for_the_same_payload(staff_user):
    voter = User.objects.create_user(username="voter")
    funded_stake(voter, Decimal("25.5"), lock_days=30)
    now = timezone.now()
    proposal = services.proposal_create(
        proposer=staff_user,
        title="Plant more flowers",
        voting_starts_at=now - timedelta(minutes=1),
        voting_ends_at=now + timedelta(days=1),
        quorum=Decimal(1),
    )
    services.proposal_open(actor=staff_user, proposal_id=proposal.pk)

    services.vote_cast(voter=voter, proposal_id=proposal.pk, choice="for")
    voted = OutboxEvent.objects.filter(payload__action="vote_cast").values().get()
    recorded_id = record_event(kind=voted["kind"], payload=voted["payload"])
    recorded = OutboxEvent.objects.filter(id=recorded_id).values().get()

    assert voted["payload"]["action"] == "vote_cast"
    assert {k: v for k, v in voted.items() if k not in PER_EVENT} == {
        k: v for k, v in recorded.items() if k not in PER_EVENT
    }
