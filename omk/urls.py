from django.contrib import admin
from django.urls import include, path

from lifecycle import views as lifecycle_views
from omk import views
from omk.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("health", lifecycle_views.health, name="health"),
    path("ready", lifecycle_views.ready, name="ready"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # --- hive (issue 5) ---
    path("hive/", include("hive.urls")),
]

handler500 = "lifecycle.views.server_error"
