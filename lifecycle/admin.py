from django.contrib import admin

from lifecycle.models import Instance, InstanceEvent, LifecycleReport


class InstanceEventInline(admin.TabularInline):
    model = InstanceEvent
    extra = 0
    can_delete = False
    readonly_fields = ("state", "at", "detail")


class LifecycleReportInline(admin.TabularInline):
    model = LifecycleReport
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "started_at", "duration", "budget", "ok", "steps")


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    # The registry is written by the instances themselves: the admin only reads it.
    list_display = ("id", "kind", "state", "host", "pid", "platform", "version", "started_at", "state_changed_at")
    list_filter = ("state", "kind", "platform")
    search_fields = ("id", "host")
    readonly_fields = [f.name for f in Instance._meta.fields]
    inlines = [InstanceEventInline, LifecycleReportInline]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(LifecycleReport)
class LifecycleReportAdmin(admin.ModelAdmin):
    list_display = ("instance", "kind", "ok", "duration", "budget", "started_at")
    list_filter = ("kind", "ok")
    readonly_fields = ("instance", "kind", "started_at", "duration", "budget", "ok", "steps")

    def has_add_permission(self, request) -> bool:
        return False
