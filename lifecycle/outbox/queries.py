"""The outbox's INSERT as one part of another app's SQL statement.

`record_event` writes an event with a statement of its own. A change that is one statement
already (the vote: a CTE that locks, reads and inserts in one round trip) takes the event's
INSERT from here as one more part of that statement, so the event is written if and only if the
change is, in the same round trip, and the outbox app still owns every write to its table:

    event = event_insert(
        kind=EventKind.GOVERNANCE_EVENT,
        payload={"action": "vote_cast", "proposal_id": 7},
        source="v",                                           # one event per row of the caller's `v`
        payload_sql="jsonb_build_object('vote_id', v.id)",   # merged into the payload, from that row
    )
    cursor.execute(f"WITH v AS (... RETURNING id), e AS ({event.sql}) SELECT ...", {**params, **event.params})

The column list and every value come from `OutboxEvent`'s concrete fields: an unsaved instance
gives each column its default, each field its database value (`pre_save`, `get_db_prep_save`),
as the ORM's own INSERT would. A column added to the model is written here too, without a
change to any caller. The payload is checked as `record_event` checks it: bad input raises
ValueError before any SQL, so the caller's transaction is untouched.
"""

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from lifecycle.outbox.models import KIND_TABLES, OutboxEvent, StrictJSONEncoder
from lifecycle.wake import work_created

# Every parameter of the event's part is named `outbox_<column>`: the caller's own names must
# not start with it.
PARAM_PREFIX = "outbox_"
_PAYLOAD = OutboxEvent._meta.get_field("payload")
# \u0000 as JSON writes it, not preceded by an escaped backslash (that would be the text "\u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class EventInsert:
    """One outbox INSERT ... SELECT for a CTE part, its named parameters, and the event's id."""

    sql: str
    params: dict[str, Any]
    event_id: uuid.UUID


def event_insert(
    *, kind: str, payload: dict, source: str = "", payload_sql: str = "", created_at: datetime | None = None
) -> EventInsert:
    """The INSERT of one event per row of `source`, to run inside the caller's statement.

    - `source`: the FROM list the event's SELECT reads (the caller's CTE names, e.g. "v, w"): no
      row there, no event. Empty: exactly one event.
    - `payload_sql`: a jsonb expression over `source`, merged into `payload` (`payload || expr`),
      for values only the statement knows (the id it inserts).
    - `created_at`: the event's time (default now), e.g. the change's own timestamp.
    """
    encoded = encode_payload(kind=kind, payload=payload)
    # Every caller runs the INSERT in its transaction: once that commits, a worker that scales
    # to zero is woken to export it, lazily (nothing happens outside a request, or with the worker
    # always on).
    work_created(urgent=False)
    event = OutboxEvent(kind=kind, created_at=created_at or timezone.now())
    db = connections[DEFAULT_DB_ALIAS]  # the one `connection` stands for, looked up once, not per field
    params = {
        PARAM_PREFIX + field.column: (
            encoded if field is _PAYLOAD else field.get_db_prep_save(field.pre_save(event, add=True), db)
        )
        for field in OutboxEvent._meta.concrete_fields
    }
    return EventInsert(sql=_insert_sql(source, payload_sql), params=params, event_id=event.pk)


@cache
def _insert_sql(source: str, payload_sql: str) -> str:
    quote = connection.ops.quote_name
    columns, values = [], []
    for field in OutboxEvent._meta.concrete_fields:
        columns.append(quote(field.column))
        value = f"%({PARAM_PREFIX}{field.column})s"
        if field is _PAYLOAD:
            value = f"{value}::jsonb" + (f" || ({payload_sql})" if payload_sql else "")
        values.append(value)
    sql = f"INSERT INTO {quote(OutboxEvent._meta.db_table)} ({', '.join(columns)}) SELECT {', '.join(values)}"
    return f"{sql} FROM {source}" if source else sql


def encode_payload(*, kind: str, payload: dict) -> str:
    """The payload as the outbox stores it (JSON text), or ValueError for what it cannot store:
    an unknown kind, not a dict, not JSON-serializable, NaN or Infinity, a NUL character."""
    if kind not in KIND_TABLES:
        raise ValueError(f"kind: unknown event kind {kind!r}; expected one of {', '.join(sorted(KIND_TABLES))}.")
    if not isinstance(payload, dict):
        raise ValueError(f"payload: must be a dict, got {type(payload).__name__}.")
    try:
        encoded = json.dumps(payload, cls=StrictJSONEncoder, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(f"payload: not JSON-serializable ({exc}).") from exc
    except ValueError as exc:
        raise ValueError(f"payload: {exc}.") from exc
    if "\\u0000" in encoded and _ESCAPED_NUL.search(encoded):
        # PostgreSQL's jsonb cannot hold NUL: the INSERT would fail and abort the caller's transaction.
        raise ValueError("payload: contains a NUL character (\\u0000), which PostgreSQL cannot store.")
    return encoded
