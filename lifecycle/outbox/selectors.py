"""Reads of the outbox (HackSoft selectors)."""

import dataclasses

from django.db.models import Q
from django.utils import timezone

from lifecycle.outbox.models import OutboxEvent

PENDING = Q(exported_at__isnull=True, quarantined_at__isnull=True)
QUARANTINED = Q(exported_at__isnull=True, quarantined_at__isnull=False)


@dataclasses.dataclass(frozen=True)
class OutboxStats:
    pending: int
    quarantined: int
    oldest_pending_seconds: float


def outbox_stats() -> OutboxStats:
    """Three reads, each through a partial index of its own rows: never a scan of the exported
    rows kept for the retention (the exporter loop refreshes these metrics after every pass)."""
    pending = OutboxEvent.objects.filter(PENDING)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    quarantined = OutboxEvent.objects.filter(QUARANTINED).count()
    age = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    return OutboxStats(pending=pending.count(), quarantined=quarantined, oldest_pending_seconds=age)
