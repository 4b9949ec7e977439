from django.contrib import admin

from lifecycle.idempotency.models import IdempotencyRecord


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "user", "method", "path", "response_status", "created_at"]
    search_fields = ["key", "user__username", "path"]
    list_filter = ["method", "response_status"]
    readonly_fields = [f.name for f in IdempotencyRecord._meta.fields]
