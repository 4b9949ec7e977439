"""The API's URL patterns: the URLconf that omk.urls mounts at /api/ without importing it.

Building the API (every operation's pydantic models, about 130 ms) waits for the first request
whose path starts with /api/ (or the first reverse() of an `api:` name), not for the first
request of any kind: readiness probes, pages and the admin never pay it.
"""

from omk.api import api

urlpatterns, app_name, _namespace = api.urls
