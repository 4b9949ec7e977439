from django.contrib.auth import views as auth_views
from django.urls import URLResolver, include, path
from django.urls.resolvers import RoutePattern

from lifecycle import metrics as lifecycle_metrics
from lifecycle import views as lifecycle_views
from lifecycle import wake as lifecycle_wake
from lifecycle.conf import lifecycle_settings
from omk import views

urlpatterns = [
    path("", views.home, name="home"),
    path("health", lifecycle_views.health, name="health"),
    path("ready", lifecycle_views.ready, name="ready"),
    # The worker service's wake-up (404 unless LIFECYCLE_WAKE_SERVE; lifecycle/wake.py).
    path("internal/wake", lifecycle_wake.wake_view, name="wake"),
    # A resolver given a module name imports it when first asked to match or reverse (as Django's
    # root resolver does with ROOT_URLCONF); include(), admin.site.urls and api.urls would
    # discover the admin and build the API now.
    URLResolver(RoutePattern("admin/"), "omk.admin_urls", app_name="admin", namespace="admin"),
    URLResolver(RoutePattern("api/"), "omk.api_urls", app_name="ninja", namespace="api"),
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
