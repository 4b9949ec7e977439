"""Web pages of the hive: the user's conversations, one conversation, the board. Thin: the
services and selectors do the work, exactly as for the API."""

from __future__ import annotations

import re
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.errors import Conflict, InvalidInput, NotFound, Throttled
from core.http import AuthenticatedHttpRequest
from hive import selectors, services
from hive.models import Reply, Turn

# The API's largest page offset (hive.api.BoardPageQuery).
MAX_OFFSET = 1_000_000


def _errors(exc: InvalidInput) -> list[str]:
    return [f"{field}: {' '.join(msgs)}" for field, msgs in exc.fields.items()] or [exc.detail]


@login_required
@require_http_methods(["GET", "POST"])
def conversation_list_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            conversation = services.conversation_create(owner=request.user, title=request.POST.get("title", ""))
        except InvalidInput as exc:
            for error in _errors(exc):
                messages.error(request, error)
            return redirect("hive:conversations")
        return redirect("hive:conversation", conversation_id=conversation.id)
    conversations = selectors.conversation_list(user=request.user)
    return render(request, "hive/conversation_list.html", {"conversations": conversations})


@login_required
@require_http_methods(["GET", "POST"])
def conversation_page(request: AuthenticatedHttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    try:
        conversation = selectors.conversation_get(conversation_id=conversation_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    status = 200
    form = {"content": ""}
    if request.method == "POST":
        form = {"content": request.POST.get("content", "")}
        try:
            services.turn_append(
                conversation_id=conversation.id, user=request.user, role=Turn.Role.USER, content=form["content"]
            )
        except InvalidInput as exc:
            for error in _errors(exc):
                messages.error(request, error)
            status = 422
        else:
            # Post/redirect/get: reloading the page does not append the turn twice.
            return redirect("hive:conversation", conversation_id=conversation.id)
        conversation.refresh_from_db()
    turns = selectors.conversation_turns(conversation=conversation)
    replies = selectors.replies_open(conversation=conversation)
    context = {
        "conversation": conversation,
        "turns": turns,
        "replies": replies,
        "pending": any(reply.status == Reply.Status.PENDING for reply in replies),
        "form": form,
    }
    return render(request, "hive/conversation.html", context, status=status)


@login_required
@require_http_methods(["POST"])
def reply_retry_page(request: AuthenticatedHttpRequest, conversation_id: uuid.UUID, reply_id: int) -> HttpResponse:
    try:
        services.reply_retry(conversation_id=conversation_id, reply_id=reply_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except Conflict as exc:
        messages.error(request, exc.detail)
    return redirect("hive:conversation", conversation_id=conversation_id)


@login_required
@require_http_methods(["GET", "POST"])
def board_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            services.board_post_create(author=request.user.get_username(), body=request.POST.get("body", ""))
        except InvalidInput as exc:
            for error in _errors(exc):
                messages.error(request, error)
        except Throttled as exc:
            messages.error(request, exc.detail)
        return redirect("hive:board")
    raw = request.GET.get("offset", "0")
    # The API's rule for page parameters: digits only, 0 to 1,000,000.
    if not re.fullmatch(r"[0-9]{1,7}", raw) or int(raw) > MAX_OFFSET:
        messages.error(request, f"offset: must be a whole number from 0 to {MAX_OFFSET:,}.")
        return render(request, "hive/board.html", {"page": None, "offset": 0}, status=400)
    offset = int(raw)
    page = selectors.board_post_list(offset=offset)
    return render(request, "hive/board.html", {"page": page, "offset": offset})
