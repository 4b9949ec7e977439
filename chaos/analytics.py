"""Where acknowledged analytics events are looked for: BigQuery (the emulator) when the run has
one and the exporter drained the outbox, else the PostgreSQL outbox itself.

Events are found by a marker the client put in the payload, not by event id: a retried request
that wrongly recorded a second event would carry a new id, and only the marker reveals it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.run import Run


def _count(texts: Iterable[str], markers: set[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        for marker in markers:
            if marker in text:
                counts[marker] += 1
    return counts


def outbox_texts(kind: str) -> list[str]:
    from lifecycle.outbox.models import OutboxEvent

    return [json.dumps(p) for p in OutboxEvent.objects.filter(kind=kind).values_list("payload", flat=True)]


def bigquery_texts(kind: str) -> list[str]:
    from lifecycle.outbox.conf import outbox_settings
    from lifecycle.outbox.models import KIND_TABLES
    from lifecycle.outbox.sinks.bigquery import bigquery_client

    client = bigquery_client()
    table = f"{outbox_settings.BIGQUERY_PROJECT}.{outbox_settings.BIGQUERY_DATASET}.{KIND_TABLES[kind]}"
    rows = client.query(f"SELECT payload FROM `{table}`").result()
    return [row[0] if isinstance(row[0], str) else json.dumps(row[0]) for row in rows]


def event_counts(run: Run, *, kind: str, markers: Iterable[str]) -> dict[str, Any]:
    markers = set(markers)
    if run.bigquery_url:
        return {"where": "bigquery", "counts": _count(bigquery_texts(kind), markers)}
    return {"where": "outbox", "counts": _count(outbox_texts(kind), markers)}
