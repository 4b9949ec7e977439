from django.urls import path

from hive import views

app_name = "hive"

urlpatterns = [
    path("conversations/", views.conversation_list_page, name="conversations"),
    path("conversations/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path(
        "conversations/<uuid:conversation_id>/replies/<int:reply_id>/retry/",
        views.reply_retry_page,
        name="reply_retry",
    ),
    path("board/", views.board_page, name="board"),
]
