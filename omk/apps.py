"""The admin, discovered when it is first used instead of at django.setup().

Django's AdminConfig imports every app's admin.py at start-up (their ModelAdmins, forms and the
services they call), for a site only staff open. Here omk.admin_urls discovers them when the
first /admin/ request or reverse("admin:...") needs the admin's URLs, and the system checks do
before they check the registered ModelAdmins (without it they would check none).
"""

from typing import Any

from django.contrib.admin import autodiscover
from django.contrib.admin.apps import SimpleAdminConfig
from django.contrib.admin.checks import check_admin_app, check_dependencies
from django.core import checks


def check_discovered_admin_app(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    autodiscover()
    return check_admin_app(app_configs, **kwargs)


class LazyAdminConfig(SimpleAdminConfig):
    def ready(self) -> None:
        # SimpleAdminConfig's two checks, the second after the discovery it relies on.
        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(check_discovered_admin_app, checks.Tags.admin)
