"""Writes of the idempotency keys' table besides the decorator's own claim."""

from datetime import timedelta

from django.utils import timezone

from lifecycle.idempotency.models import IdempotencyRecord


def idempotency_purge(*, older_than: timedelta) -> int:
    """Delete keys older than `older_than` (clients retry within minutes, not days)."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
