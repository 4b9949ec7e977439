from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    # Reads PostgreSQL (member count) and the session in Redis, like every user page does.
    request.session["visits"] = request.session.get("visits", 0) + 1
    context = {"visits": request.session["visits"], "members": get_user_model().objects.count()}
    return render(request, "home.html", context)
