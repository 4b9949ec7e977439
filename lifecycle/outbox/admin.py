from django.contrib import admin, messages
from django.db.models import Q

from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.services import outbox_retry_quarantined


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("pending", "pending"),
            ("staged", "staged (being exported, or left by a dead exporter)"),
            ("quarantined", "quarantined"),
            ("exported", "exported"),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "pending":
                return queryset.filter(exported_at__isnull=True, quarantined_at__isnull=True, stream="")
            case "staged":
                return queryset.filter(exported_at__isnull=True).exclude(stream="")
            case "quarantined":
                return queryset.filter(Q(quarantined_at__isnull=False) & Q(exported_at__isnull=True))
            case "exported":
                return queryset.filter(exported_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "created_at", "exported_at", "attempts", "short_error"]
    list_filter = [StateFilter, "kind"]
    search_fields = ["id", "last_error"]
    # The table can hold a week of events: no date drill-down or exact total over all of it.
    show_full_result_count = False
    ordering = ["-created_at"]
    actions = ["retry"]
    # The outbox is written only by record_event and the exporter: the admin looks, and retries.
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="error")
    def short_error(self, obj: OutboxEvent) -> str:
        return obj.last_error[:120]

    @admin.action(description="Retry the selected quarantined events")
    def retry(self, request, queryset):
        count = outbox_retry_quarantined(event_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} quarantined event(s) queued again.", messages.SUCCESS)
