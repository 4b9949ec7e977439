"""The service's URLs plus the bench's views: a bare Django view that does one INSERT, the same
behind the session, user and CSRF check, and the vote written the conventional way."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bench.conventional import conventional_vote
from omk.urls import urlpatterns as service_urlpatterns


@csrf_exempt
def bare_insert(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_insert (payload, created_at) VALUES (%s, now()) RETURNING id", [request.body])
        (row_id,) = cursor.fetchone()
    return JsonResponse({"id": row_id}, status=201)


def session_insert(request: HttpRequest) -> HttpResponse:
    """The same INSERT behind what every browser API call pays: the session read from Redis, the
    user loaded, the CSRF check (this view is not exempt)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "unauthorized"}, status=401)
    return bare_insert(request)


urlpatterns = [
    path("bench/insert", bare_insert),
    path("bench/session-insert", session_insert),
    path("bench/conventional/proposals/<int:proposal_id>/votes/", conventional_vote, name="bench-conventional-vote"),
    *service_urlpatterns,
]
