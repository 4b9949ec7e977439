"""The admin's URL patterns: the URLconf that omk.urls mounts at /admin/ without importing it.

Importing it discovers every app's admin.py (omk.apps.LazyAdminConfig): the first /admin/
request or reverse("admin:...") pays for it, readiness probes and the other pages never do.
"""

from django.contrib import admin

admin.autodiscover()
urlpatterns, app_name, _namespace = admin.site.urls
