from django.contrib import admin

from hive.models import BeeQueue, Conversation, Turn
from hive.services import bee_queue_delete


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    readonly_fields = ["seq", "role", "content", "created_at"]
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "title", "last_seq", "updated_at"]
    search_fields = ["id", "owner__username", "title"]
    readonly_fields = ["last_seq", "created_at", "updated_at"]
    inlines = [TurnInline]


@admin.register(BeeQueue)
class BeeQueueAdmin(admin.ModelAdmin):
    """Staff manage every queue: owner and members. A deletion also drops the queue's messages."""

    list_display = ["name", "owner", "created_at"]
    search_fields = ["name", "owner__username", "members__username"]
    raw_id_fields = ["owner"]
    filter_horizontal = ["members"]
    readonly_fields = ["created_at"]

    def get_readonly_fields(self, request, obj=None):
        # The name is the Redis stream's key: renaming would orphan its messages.
        return [*self.readonly_fields, "name"] if obj is not None else self.readonly_fields

    def delete_model(self, request, obj):
        bee_queue_delete(queue=obj)

    def delete_queryset(self, request, queryset):
        for queue in queryset:
            bee_queue_delete(queue=queue)
