from django.contrib import admin

from hive.models import Conversation, Turn


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
