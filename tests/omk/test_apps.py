"""The admin is discovered on first use: not by django.setup(), but by its URLs and its checks."""

import pytest

from tests.support.interpreter import python_output

REGISTERED = """
import django
django.setup()
from django.contrib import admin
from governance.models import Proposal

print("setup", admin.site.is_registered(Proposal))
{then}
print("then", admin.site.is_registered(Proposal))
"""


def registered(then: str) -> list[str]:
    return python_output(REGISTERED.format(then=then)).split()


@pytest.mark.slow
def test_lazy_admin__the_system_checks_discover_what_they_check():
    run = "from django.core import checks\nchecks.run_checks(tags=[checks.Tags.admin])"
    assert registered(run) == ["setup", "False", "then", "True"]


@pytest.mark.slow
def test_lazy_admin__reversing_an_admin_url_discovers_it():
    assert registered("from django.urls import reverse\nreverse('admin:index')") == ["setup", "False", "then", "True"]


def test_lazy_admin__pages_are_served(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    response = client.get("/admin/governance/proposal/")
    assert response.status_code == 200
