"""Writes of the instance registry (HackSoft services: keyword-only, in transactions)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from core.redis import redis_client
from lifecycle.conf import lifecycle_settings
from lifecycle.models import LIVE_STATES, Instance, InstanceEvent, InstanceState, LifecycleReport, ReportKind
from lifecycle.platform import detect_platform
from lifecycle.registry import heartbeat_key, heartbeat_write, instance_version
from lifecycle.steps import Report

logger = logging.getLogger(__name__)


@transaction.atomic
def instance_register(
    *,
    instance_id: str,
    kind: str,
    pid: int | None = None,
    host: str | None = None,
    state: str = InstanceState.STARTING,
    write_heartbeat: bool = True,
) -> Instance:
    now = timezone.now()
    if write_heartbeat:
        # Heartbeat first: from the moment the row exists, recovery elsewhere sees it alive.
        heartbeat_write(redis_client(), instance_id=instance_id, state=state, ttl=lifecycle_settings.HEARTBEAT_TTL)
    instance = Instance(
        id=instance_id,
        kind=kind,
        host=host or socket.gethostname(),
        pid=pid or os.getpid(),
        platform=detect_platform().platform.value,
        version=instance_version(),
        state=state,
        started_at=now,
        state_changed_at=now,
    )
    # One statement (INSERT ... ON CONFLICT DO UPDATE) where update_or_create takes five round
    # trips (two savepoints, a SELECT FOR UPDATE, the INSERT): it runs before every start's
    # readiness. An id registered before (a restarted worker process) is overwritten.
    Instance.objects.bulk_create(
        [instance],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=[f.name for f in Instance._meta.concrete_fields if not f.primary_key],
    )
    InstanceEvent.objects.create(instance=instance, state=state, at=now, detail="registered")
    _record_lifecycle_event(instance_id=instance_id, state=state, detail="registered", kind=kind)
    return instance


def _record_lifecycle_event(*, instance_id: str, state: str, detail: str, kind: str | None = None) -> None:
    """The state change as an analytics event, in the same transaction (the outbox)."""
    try:
        from lifecycle.outbox.services import record_event
    except ImportError:
        return
    payload = {"instance_id": instance_id, "state": state, "detail": detail}
    if kind is not None:
        payload["kind"] = kind
    record_event(kind="lifecycle_event", payload=payload)


@transaction.atomic
def instance_set_state(*, instance_id: str, state: str, detail: str = "") -> None:
    now = timezone.now()
    updated = Instance.objects.filter(id=instance_id).update(state=state, state_changed_at=now)
    if updated:
        InstanceEvent.objects.create(instance_id=instance_id, state=state, at=now, detail=detail[:500])
        _record_lifecycle_event(instance_id=instance_id, state=state, detail=detail[:500])


@transaction.atomic
def report_record(*, instance_id: str, report: Report) -> LifecycleReport:
    return LifecycleReport.objects.create(
        instance_id=instance_id,
        kind=report.kind,
        started_at=dt.datetime.fromtimestamp(report.started_at, tz=dt.UTC),
        duration=report.duration,
        budget=report.budget,
        ok=report.ok,
        steps=[s.as_dict() for s in report.steps],
    )


def shutdown_reports_claim(*, limit: int = 500) -> list[tuple[str, LifecycleReport]]:
    """Shutdown reports not counted into any process's metrics yet, with their instance's kind,
    marked counted. SKIP LOCKED: passes running at once on several instances take each once."""
    with transaction.atomic():
        reports = list(
            LifecycleReport.objects.select_related("instance")
            .select_for_update(skip_locked=True, of=("self",))
            .filter(kind=ReportKind.SHUTDOWN, counted_at__isnull=True)
            .order_by("id")[:limit]
        )
        LifecycleReport.objects.filter(pk__in=[r.pk for r in reports]).update(counted_at=timezone.now())
    return [(report.instance.kind, report) for report in reports]


@transaction.atomic
def instances_prune(*, older_than: dt.timedelta) -> int:
    """Delete the instances that stopped or were lost more than `older_than` ago, with their
    events and reports; the number deleted. One with a shutdown report that no live instance has
    counted into its metrics yet stays until one has (lifecycle.recovery.CountShutdowns)."""
    uncounted = LifecycleReport.objects.filter(
        instance=OuterRef("pk"), kind=ReportKind.SHUTDOWN, counted_at__isnull=True
    )
    _, deleted = (
        Instance.objects.filter(
            state__in=(InstanceState.STOPPED, InstanceState.LOST),
            state_changed_at__lt=timezone.now() - older_than,
        )
        .exclude(Exists(uncounted))
        .delete()
    )
    return deleted.get(Instance._meta.label, 0)


def instances_mark_lost(*, ttl: float | None = None) -> list[str]:
    """Mark `lost` every instance that never stopped cleanly and whose heartbeat expired.

    Rows are locked with SKIP LOCKED so that recovery passes running at once on several instances
    record each loss once.
    """
    ttl = lifecycle_settings.HEARTBEAT_TTL if ttl is None else ttl
    cutoff = timezone.now() - dt.timedelta(seconds=ttl)
    lost: list[str] = []
    with transaction.atomic():
        candidates = list(
            Instance.objects.select_for_update(skip_locked=True)
            .filter(state__in=LIVE_STATES, state_changed_at__lt=cutoff)
            .values_list("id", flat=True)
        )
        if not candidates:
            return lost
        client = redis_client()
        with client.pipeline(transaction=False) as pipe:
            for instance_id in candidates:
                pipe.exists(heartbeat_key(instance_id))
            alive = pipe.execute()
        now = timezone.now()
        for instance_id, exists in zip(candidates, alive, strict=True):
            if exists:
                continue
            Instance.objects.filter(id=instance_id).update(state=InstanceState.LOST, state_changed_at=now)
            detail = f"no heartbeat for over {ttl:g} s"
            InstanceEvent.objects.create(instance_id=instance_id, state=InstanceState.LOST, at=now, detail=detail)
            _record_lifecycle_event(instance_id=instance_id, state=InstanceState.LOST, detail=detail)
            lost.append(instance_id)
    if lost:
        logger.warning("Instances lost (heartbeat expired without a clean stop): %s", ", ".join(lost))
    return lost
