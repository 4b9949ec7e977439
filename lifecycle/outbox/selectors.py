"""Reads of the outbox (HackSoft selectors)."""

import dataclasses

from django.db.models import Count, Min, Q
from django.utils import timezone

from lifecycle.outbox.models import OutboxEvent

PENDING = Q(exported_at__isnull=True, quarantined_at__isnull=True)


@dataclasses.dataclass(frozen=True)
class OutboxStats:
    pending: int
    quarantined: int
    oldest_pending_seconds: float


def outbox_stats() -> OutboxStats:
    row = OutboxEvent.objects.filter(exported_at__isnull=True).aggregate(
        pending=Count("id", filter=Q(quarantined_at__isnull=True)),
        quarantined=Count("id", filter=Q(quarantined_at__isnull=False)),
        oldest=Min("created_at", filter=Q(quarantined_at__isnull=True)),
    )
    oldest = row["oldest"]
    age = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    return OutboxStats(pending=row["pending"], quarantined=row["quarantined"], oldest_pending_seconds=age)
