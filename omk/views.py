from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    # Reads PostgreSQL (member count), like every user page. Only a logged-in user's session
    # counts visits: an anonymous visitor gets no session, so no Redis key per visitor (a crawler
    # or a flood of GETs cannot fill Redis with sessions).
    visits = None
    if request.user.is_authenticated:
        visits = request.session["visits"] = request.session.get("visits", 0) + 1
    context = {"visits": visits, "members": get_user_model().objects.count()}
    return render(request, "home.html", context)
