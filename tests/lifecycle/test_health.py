from django.conf import settings
from health_check.base import HealthCheck

from lifecycle.health import DatabaseCheck


def test_database_check__budget_covers_a_dropped_path():
    # django-health-check cancels a check at its budget and answers "Timed out", which names no
    # cause; the database's own bound (a broken pooled connection, then a new one) must come first.
    options = settings.DATABASES["default"]["OPTIONS"]
    bound = options["tcp_user_timeout"] / 1000 + options["pool"]["timeout"]
    assert bound > HealthCheck.timeout.total_seconds()
    assert DatabaseCheck().timeout.total_seconds() == bound
