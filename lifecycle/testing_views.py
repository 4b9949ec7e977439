"""Views for the lifecycle tests only (LIFECYCLE_TEST_VIEWS, set by settings.test alone)."""

import time

from django.http import HttpRequest, JsonResponse

from lifecycle.drain import is_draining

# The longest a request here waits for the instance's drain to begin (`?after=draining`).
DRAIN_WAIT_SECONDS = 60.0


def slow(request: HttpRequest) -> JsonResponse:
    """A request that takes `?seconds=` (at most 30) to answer: an in-flight request. With
    `?after=draining` the seconds begin once the instance drains: a request that is surely in
    flight when its shutdown begins, however long the shutdown takes to be asked for."""
    try:
        seconds = float(request.GET.get("seconds", "1"))
    except ValueError:
        return JsonResponse(
            {"error": "invalid", "detail": "seconds must be a number", "fields": {"seconds": "number"}}, status=400
        )
    seconds = min(max(seconds, 0.0), 30.0)
    if request.GET.get("after") == "draining":
        deadline = time.monotonic() + DRAIN_WAIT_SECONDS
        while not is_draining() and time.monotonic() < deadline:
            time.sleep(0.05)
    if seconds > 0:
        time.sleep(seconds)
    return JsonResponse({"slept": seconds})
