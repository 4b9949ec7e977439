"""Conversations with the Queen AI: the durable record of every turn (PostgreSQL)."""

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # The seq of the newest turn. Appending increments it with UPDATE ... RETURNING, which locks
    # the row until commit: concurrent appends (any instance) queue up and get consecutive seqs,
    # and a rolled-back append rolls the counter back too, so seqs have no gaps.
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"], name="hive_conv_owner_updated")]

    def __str__(self) -> str:
        return self.title or str(self.id)


class BeeQueue(models.Model):
    """A bee message queue (its messages are a Redis stream, lifecycle.queues). Its owner and
    members may publish, claim and ack; to anyone else it does not exist."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "Letters, digits, '_', '-' and '.' only.")],
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_queues")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="member_queues")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The pattern of lifecycle.queues.services.NAME_PATTERN: safe in Redis keys and URLs.
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), name="hive_queue_name_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Turn(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    # The user turn an assistant turn answers (the Queen's replies; null for turns written
    # before the service wrote them). Unique: one reply per user turn, whatever retries a job.
    answers = models.OneToOneField("self", null=True, blank=True, on_delete=models.CASCADE, related_name="answered_by")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            # The last line of defence for "one turn per seq": even a bug in the counter cannot
            # write two turns with one seq.
            models.UniqueConstraint(fields=["conversation", "seq"], name="hive_turn_unique_seq"),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="hive_turn_seq_positive"),
            models.CheckConstraint(condition=models.Q(role__in=["user", "assistant"]), name="hive_turn_role_valid"),
            models.CheckConstraint(condition=~models.Q(content=""), name="hive_turn_content_not_empty"),
            models.CheckConstraint(
                condition=models.Q(answers__isnull=True) | models.Q(role="assistant"),
                name="hive_turn_answers_by_assistant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.role}"


class Reply(models.Model):
    """The Queen's reply to one user turn: pending from the user turn's transaction until the job
    appends the assistant turn (done), or failed once the retries are spent (the user may retry)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="replies")
    # One reply per user turn, keyed by the turn it answers.
    user_turn = models.OneToOneField(Turn, on_delete=models.CASCADE, related_name="reply")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Failed calls of the LLM backend since the reply was last (re)queued.
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    turn = models.OneToOneField(Turn, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["conversation", "user_turn"]
        indexes = [models.Index(fields=["status", "created_at"], name="hive_reply_status_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["pending", "done", "failed"]), name="hive_reply_status_valid"
            ),
            # done <=> the assistant turn is there.
            models.CheckConstraint(
                condition=models.Q(status="done", turn__isnull=False)
                | (~models.Q(status="done") & models.Q(turn__isnull=True)),
                name="hive_reply_done_has_turn",
            ),
        ]

    def __str__(self) -> str:
        return f"reply to {self.user_turn_id} ({self.status})"
