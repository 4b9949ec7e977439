from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """One client request that had an effect, with the response it got, keyed per user.

    Written in the same transaction as the effect: either both exist or neither does, so a retry
    after the instance died right after COMMIT finds the response here and creates nothing.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of method, path and canonical JSON body: the same key with another request is a 422.
    request_hash = models.CharField(max_length=64)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.TextField(blank=True)
    response_content_type = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_one_record_per_user_key")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key} -> {self.response_status}"
