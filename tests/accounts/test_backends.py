import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.test import Client, RequestFactory

from accounts.backends import ModelBackend, _select_by_pk

pytestmark = pytest.mark.django_db


def test_model_backend__get_user_loads_every_field_as_the_orm_does(user):
    user.first_name, user.email, user.is_staff = "Alice", "alice@example.com", True
    user.save()
    loaded = ModelBackend().get_user(user.pk)
    expected = get_user_model().objects.get(pk=user.pk)
    fields = [field.attname for field in get_user_model()._meta.concrete_fields]
    assert {name: getattr(loaded, name) for name in fields} == {name: getattr(expected, name) for name in fields}
    assert loaded._state.adding is False
    assert loaded._state.db == "default"


def test_model_backend__unknown_or_inactive_user_is_none(user):
    assert ModelBackend().get_user(user.pk + 1000) is None
    user.is_active = False
    user.save()
    assert ModelBackend().get_user(user.pk) is None
    assert DjangoModelBackend().get_user(user.pk) is None  # the same rule as Django's


def test_model_backend__a_logged_in_session_is_served_by_it(user):
    client = Client()
    # With a request, as every login path passes it (the lockout backend needs one).
    assert client.login(request=RequestFactory().post("/login/"), username="alice", password="alice-password-1")
    assert client.session[SESSION_KEY] == str(user.pk)
    assert client.session["_auth_user_backend"] == "accounts.backends.ModelBackend"
    assert client.get("/api/auth/me").json()["username"] == "alice"
    user.set_password("changed-password-2")
    user.save()
    # The session hash check still applies: a password change ends other sessions.
    assert client.get("/api/auth/me").status_code == 401


def test_select_by_pk__a_manager_with_parameters_of_its_own_keeps_djangos_way():
    user_model = get_user_model()

    class StaffDomainManager:
        def db_manager(self, alias):
            return user_model.objects.db_manager(alias).filter(email__endswith="@omk.example")

    class StaffDomainUsers:
        _meta = user_model._meta
        _default_manager = StaffDomainManager()

    assert _select_by_pk(StaffDomainUsers, "default") is None
    sql, columns = _select_by_pk(user_model, "default")
    assert sql.count("%s") == 1
    assert columns[0] == "id"
