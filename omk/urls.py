from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from lifecycle import metrics as lifecycle_metrics
from lifecycle import views as lifecycle_views
from lifecycle.conf import lifecycle_settings
from omk import views
from omk.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("health", lifecycle_views.health, name="health"),
    path("ready", lifecycle_views.ready, name="ready"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("governance.urls")),
    path("hive/", include("hive.urls")),
]

# Prometheus metrics, and a slow view for the shutdown tests only.
urlpatterns += [path("metrics", lifecycle_metrics.metrics, name="metrics")]
if lifecycle_settings.TEST_VIEWS:
    from lifecycle import testing_views

    urlpatterns += [path("_test/slow", testing_views.slow, name="test-slow")]

handler500 = "lifecycle.views.server_error"
