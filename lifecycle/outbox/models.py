"""The outbox: analytics events written in the transaction of the change that caused them.

A row exists if and only if that transaction committed; it stays until BigQuery has it (and
then `RETENTION_DAYS` more), so no event is ever only in an instance's memory.
"""

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q


class StrictJSONEncoder(DjangoJSONEncoder):
    """DjangoJSONEncoder (datetimes, Decimals, UUIDs) that refuses NaN and Infinity.

    Python writes them as bare `NaN` tokens, which PostgreSQL's jsonb and BigQuery's JSON both
    reject: refusing them here fails the caller's write with a ValueError before any SQL runs,
    instead of aborting its transaction with a DataError.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_nan"] = False
        super().__init__(*args, **kwargs)


class EventKind(models.TextChoices):
    LLM_CONVERSATION = "llm_conversation", "LLM conversation turn"
    BEE_DECISION = "bee_decision", "Bee decision"
    LIFECYCLE_EVENT = "lifecycle_event", "Lifecycle event"
    # Votes cast, proposals closed and executed (written by governance/services.py).
    GOVERNANCE_EVENT = "governance_event", "Governance event"


# The BigQuery table each kind is exported to.
KIND_TABLES: dict[str, str] = {
    EventKind.LLM_CONVERSATION: "llm_conversations",
    EventKind.BEE_DECISION: "bee_decisions",
    EventKind.LIFECYCLE_EVENT: "lifecycle_events",
    EventKind.GOVERNANCE_EVENT: "governance_events",
}


class OutboxEvent(models.Model):
    # The event id is generated here, once, and travels with the event to BigQuery, where it names
    # the event (what a recovery asks the table about, what users deduplicate on).
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, verbose_name="event id")
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    payload = models.JSONField(encoder=StrictJSONEncoder)
    created_at = models.DateTimeField()
    exported_at = models.DateTimeField(null=True, blank=True)
    # Failed export attempts of this row's batch, and when it may be tried again (backoff).
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Set when BigQuery rejected this very row: it is set aside so it blocks no other row.
    quarantined_at = models.DateTimeField(null=True, blank=True)
    # The sink's token for the batch holding this row (the BigQuery Storage Write stream), recorded
    # before the sink makes it visible, and when: a crash between the two is recovered from it.
    # Empty: not staged (pending rows) or staged again after a recovery found the row missing.
    stream = models.CharField(max_length=512, blank=True, default="")
    staged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox event"
        indexes = [
            # The exporter's scan and the oldest-pending metric read only pending rows, oldest first.
            models.Index(
                fields=["created_at"],
                name="outbox_pending_idx",
                condition=Q(exported_at__isnull=True, quarantined_at__isnull=True),
            ),
            # The quarantined rows (a few, set aside) counted for the metrics.
            models.Index(
                fields=["quarantined_at"],
                name="outbox_quarantined_idx",
                condition=Q(exported_at__isnull=True, quarantined_at__isnull=False),
            ),
            # Pruning reads exported rows by age.
            models.Index(fields=["exported_at"], name="outbox_exported_idx", condition=Q(exported_at__isnull=False)),
            # Recovery reads staged rows not marked exported (a few batches at most) by age.
            models.Index(
                fields=["staged_at"],
                name="outbox_staged_idx",
                condition=Q(exported_at__isnull=True) & ~Q(stream=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def state(self) -> str:
        if self.exported_at is not None:
            return "exported"
        if self.quarantined_at is not None:
            return "quarantined"
        if self.stream:
            return "staged"
        return "pending"

    @property
    def table(self) -> str:
        return KIND_TABLES[self.kind]
