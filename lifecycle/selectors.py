"""Reads of the instance registry."""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.utils import timezone

from core.redis import redis_client
from lifecycle.models import Instance, LifecycleReport
from lifecycle.registry import heartbeat_key


@dataclasses.dataclass(frozen=True)
class InstanceRow:
    instance: Instance
    # Seconds the Redis heartbeat has left; None when there is none (stopped, lost or stale).
    heartbeat_ttl: float | None


def instances_list(*, since: dt.timedelta = dt.timedelta(hours=24)) -> list[InstanceRow]:
    """Live instances and those gone within `since`, newest first, with their heartbeat."""
    cutoff = timezone.now() - since
    instances = list(
        Instance.objects.filter(state_changed_at__gte=cutoff)
        | Instance.objects.filter(state__in=("starting", "ready", "draining"))
    )
    instances.sort(key=lambda i: i.started_at, reverse=True)
    client = redis_client()
    with client.pipeline(transaction=False) as pipe:
        for instance in instances:
            pipe.pttl(heartbeat_key(instance.id))
        ttls = pipe.execute() if instances else []
    return [
        InstanceRow(instance, ttl / 1000 if ttl is not None and ttl >= 0 else None)
        for instance, ttl in zip(instances, ttls, strict=True)
    ]


def report_latest(*, instance_id: str, kind: str) -> LifecycleReport | None:
    return LifecycleReport.objects.filter(instance_id=instance_id, kind=kind).first()
