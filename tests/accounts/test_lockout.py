"""Login lockout (django-axes, counted in Redis) on every login path, and the API throttles."""

import pytest
from django.test import Client

from core.redis import redis_client

pytestmark = pytest.mark.django_db

RIGHT = "alice-password-1"


def api_login(client: Client, password: str, username: str = "alice", **extra):
    return client.post(
        "/api/auth/login", {"username": username, "password": password}, content_type="application/json", **extra
    )


def test_api_login__25_wrong_passwords_then_the_right_one_is_429(user):
    client = Client()
    codes = [api_login(client, f"guess-{n}").status_code for n in range(25)]
    # The failure that reaches the limit is answered with the lockout already.
    assert codes[:4] == [401] * 4
    assert set(codes[4:]) == {429}
    right = api_login(client, RIGHT)
    assert right.status_code == 429
    assert right.json()["error"] == "throttled"
    assert int(right["Retry-After"]) == 15 * 60
    assert "sessionid" not in right.cookies
    assert client.get("/api/auth/me").status_code == 401


def test_lockout__per_username_from_any_address(user):
    for n in range(5):
        api_login(Client(), f"guess-{n}", REMOTE_ADDR=f"10.0.0.{n + 1}")
    assert api_login(Client(), RIGHT, REMOTE_ADDR="10.9.9.9").status_code == 429


def test_lockout__per_address_for_any_username(user, django_user_model):
    django_user_model.objects.create_user(username="carol", password="carol-password-1")
    for n in range(5):
        api_login(Client(), "wrong", username=f"spray-{n}", REMOTE_ADDR="10.1.1.1")
    assert api_login(Client(), "carol-password-1", username="carol", REMOTE_ADDR="10.1.1.1").status_code == 429
    assert api_login(Client(), "carol-password-1", username="carol", REMOTE_ADDR="10.2.2.2").status_code == 200


def test_lockout__a_success_before_the_limit_clears_the_count(user):
    client = Client()
    for n in range(4):
        api_login(client, f"guess-{n}")
    assert api_login(client, RIGHT).status_code == 200
    for n in range(4):
        assert api_login(Client(), f"again-{n}").status_code == 401


def test_lockout__state_is_in_redis_and_expires(user):
    for n in range(5):
        api_login(Client(), f"guess-{n}")
    keys = redis_client().keys("*")
    assert keys
    assert all(redis_client().ttl(key) > 0 for key in keys)


def test_login_page__locked_out_is_429_with_retry_after(user):
    client = Client()
    for n in range(4):
        assert client.post("/login/", {"username": "alice", "password": f"guess-{n}"}).status_code == 200
    assert client.post("/login/", {"username": "alice", "password": "guess-4"}).status_code == 429
    response = client.post("/login/", {"username": "alice", "password": RIGHT})
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    assert "Too many failed logins" in response.content.decode()


def test_admin_login__locked_out_is_429(staff_user):
    client = Client()
    for n in range(5):
        client.post("/admin/login/", {"username": "staff", "password": f"guess-{n}"})
    response = client.post("/admin/login/?next=/admin/", {"username": "staff", "password": "staff-password-1"})
    assert response.status_code == 429
    assert "Retry-After" in response


def test_lockout__the_address_is_the_proxys_client_not_the_balancer(user, settings):
    settings.OMK_TRUSTED_PROXY_HOPS = 2
    balancer = {"REMOTE_ADDR": "35.191.0.1"}
    for n in range(5):
        # The client writes what it likes in front; our two proxies append its address and theirs.
        spoofed = f"10.0.0.{n}, 6.6.6.6, 130.211.0.1"
        api_login(Client(), "x", username=f"u{n}", HTTP_X_FORWARDED_FOR=spoofed, **balancer)
    # Another client behind the same balancer is not locked out by the first one's failures...
    assert api_login(Client(), RIGHT, HTTP_X_FORWARDED_FOR="7.7.7.7, 130.211.0.1", **balancer).status_code == 200
    # ...while the first one is, whatever it writes in front of the entries our proxies add.
    locked = api_login(Client(), RIGHT, HTTP_X_FORWARDED_FOR="1.2.3.4, 6.6.6.6, 130.211.0.1", **balancer)
    assert locked.status_code == 429


# --- API throttles ---------------------------------------------------------------------------------


def test_api_throttle__per_user_429_throttled_with_retry_after(api_client, settings):
    settings.OMK_API_THROTTLE_USER = "5/m"
    codes = [api_client.get("/api/auth/me").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    refused = api_client.get("/api/auth/me")
    assert refused.json()["error"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60


def test_api_throttle__reads_and_writes_are_counted_apart_and_users_apart(api_client, staff_client, settings):
    settings.OMK_API_THROTTLE_USER = "3/m"
    assert [api_client.get("/api/balance/").status_code for _ in range(4)] == [200, 200, 200, 429]
    write = api_client.post("/api/queues/", {"name": "w1"}, content_type="application/json")
    assert write.status_code == 201
    assert staff_client.get("/api/balance/").status_code == 200


def test_api_throttle__anonymous_per_address(db, settings):
    settings.OMK_API_THROTTLE_ANON = "3/m"
    codes = [api_login(Client(), "x", username="nobody").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert api_login(Client(), "x", username="nobody", REMOTE_ADDR="10.3.3.3").status_code == 401


def test_api_throttle__the_payment_webhook_is_not_rate_limited(db, settings):
    settings.OMK_API_THROTTLE_ANON = "1/m"
    codes = [
        Client().post("/api/payments/webhook", b"{}", content_type="application/json").status_code for _ in range(5)
    ]
    assert codes == [400] * 5  # refused by its signature, never by the rate


def test_api_throttle__counters_expire(api_client, settings):
    settings.OMK_API_THROTTLE_USER = "5/m"
    api_client.get("/api/auth/me")
    keys = redis_client().keys("omk:throttle:*")
    assert keys
    assert all(0 < redis_client().pttl(key) <= 60_000 for key in keys)


@pytest.mark.django_db(transaction=True)
def test_api_throttle__concurrent_requests_from_several_processes_admit_exactly_the_rate(user, api_token, settings):
    from tests.support.parallel import in_processes

    settings.OMK_API_THROTTLE_USER = "10/m"

    def me(_):
        return Client(headers={"Authorization": f"Bearer {api_token}"}).get("/api/auth/me").status_code

    codes = in_processes(me, range(30), processes=3)
    assert sorted(codes) == [200] * 10 + [429] * 20


@pytest.fixture
def redis_down(settings):
    """The cache (and so every Redis client of the service) pointed at a port nobody listens on."""
    import copy

    from tests.support.instances import free_port

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = caches


def test_redis_outage__logins_fail_closed_with_503(user, redis_down):
    response = api_login(Client(), RIGHT)
    assert response.status_code == 503
    assert response.json()["dependency"] == "redis"
    assert response["Retry-After"]


def test_redis_outage__api_throttle_fails_open(api_client, settings, redis_down):
    settings.OMK_API_THROTTLE_USER = "1/m"
    # Bearer-token reads that need only PostgreSQL go on, unthrottled, while Redis is away.
    assert [api_client.get("/api/balance/").status_code for _ in range(3)] == [200, 200, 200]
