from django.contrib import admin
from django.contrib.auth import views as auth_views
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
    # Web pages (governance issue).
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("governance.urls")),
]

handler500 = "lifecycle.views.server_error"
