"""The instance registry's history in PostgreSQL: instances, their state changes and reports.

Liveness itself is a Redis heartbeat (lifecycle.registry); these rows are the permanent record
(visible in the admin) and what recovery reads to find instances that vanished without a stop.
"""

from django.db import models


class InstanceKind(models.TextChoices):
    WEB = "web", "web (gunicorn)"
    WORKER = "worker", "job worker"


class InstanceState(models.TextChoices):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    LOST = "lost"


# States from which an instance can still be found lost (it never recorded a clean stop).
LIVE_STATES = (InstanceState.STARTING, InstanceState.READY, InstanceState.DRAINING)


class Instance(models.Model):
    id = models.CharField(primary_key=True, max_length=100)
    kind = models.CharField(max_length=10, choices=InstanceKind.choices)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    platform = models.CharField(max_length=20)
    version = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=InstanceState.choices, default=InstanceState.STARTING)
    started_at = models.DateTimeField()
    state_changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["state", "state_changed_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.state})"


class InstanceEvent(models.Model):
    """One state change of an instance."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="events")
    state = models.CharField(max_length=10, choices=InstanceState.choices)
    at = models.DateTimeField()
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.instance_id} -> {self.state}"


class ReportKind(models.TextChoices):
    RECOVERY = "recovery"
    SHUTDOWN = "shutdown"


class LifecycleReport(models.Model):
    """What a recovery pass or a shutdown did: each step's status, count and duration."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="reports")
    kind = models.CharField(max_length=10, choices=ReportKind.choices)
    started_at = models.DateTimeField()
    duration = models.FloatField(help_text="seconds")
    budget = models.FloatField(null=True, blank=True, help_text="seconds the platform allowed")
    ok = models.BooleanField()
    # [{"name", "label", "status": ok|failed|timed_out|skipped, "count", "duration", "detail",
    #   "flushes", "lost", "loses"}]
    steps = models.JSONField(default=list)
    # When a live instance counted this (shutdown) report into its metrics: the instance that
    # wrote it was gone before anything scraped its own samples.
    counted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.instance_id} at {self.started_at:%Y-%m-%d %H:%M:%S}"
