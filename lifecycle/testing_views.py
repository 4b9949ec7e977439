"""Views for the lifecycle tests only (LIFECYCLE_TEST_VIEWS, set by settings.test alone)."""

import time

from django.http import HttpRequest, JsonResponse


def slow(request: HttpRequest) -> JsonResponse:
    """A request that takes `?seconds=` (at most 30) to answer: an in-flight request."""
    try:
        seconds = float(request.GET.get("seconds", "1"))
    except ValueError:
        return JsonResponse(
            {"error": "invalid", "detail": "seconds must be a number", "fields": {"seconds": "number"}}, status=400
        )
    seconds = min(max(seconds, 0.0), 30.0)
    if seconds > 0:
        time.sleep(seconds)
    return JsonResponse({"slept": seconds})
