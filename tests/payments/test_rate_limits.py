"""Abuse limits: per client address on the parents' pages (counted in the shared Redis), per
account for refused webhook deliveries, the admin login lockout; each a 429 with Retry-After.
Without Redis the limits still hold, counted in the process."""

import time

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.cache import caches

from payments.models import AuditLog, WebhookEvent
from tests.conftest import post_webhook, sign, surepay_body
from tests.factories import AccountFactory, SchoolFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "pay_page": "3/m", "pay_checkout": "2/m", "pay_manual": "2/h",
                            "payment_status": "3/m", "webhook_refusals": "3/m"}
    return settings.RATE_LIMITS


def assert_429(response, *, window_seconds: int):
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= window_seconds


def test_the_pay_page_is_limited_per_client_address(client, limits, payment_request):
    url = f"/pay/{payment_request.token}/"
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(url)
    assert_429(response, window_seconds=60)
    assert b"Please try again in" in response.content
    # Another address is not affected; a forged X-Forwarded-For is not another address.
    assert client.get(url, REMOTE_ADDR="198.51.100.7").status_code == 200
    assert client.get(url, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(client, limits, payment_request, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    url = f"/pay/{payment_request.token}/"
    for _ in range(3):
        assert client.get(url, REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 200
    assert client.get(url, REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    assert client.get(url, REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="203.0.113.10").status_code == 200


def test_the_status_poll_answers_json_429(client, limits, payment_request, dummy_account):
    started = client.post(f"/pay/{payment_request.token}/checkout", {"provider": "dummy"})
    url = started["Location"].replace("/payments/simulate/", "/payments/") + "/status"
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(url)
    assert_429(response, window_seconds=60)
    assert response.json()["code"] == "rate_limited"


def test_pay_now_and_the_manual_form_are_limited(client, limits, payment_request, dummy_account):
    checkout = f"/pay/{payment_request.token}/checkout"
    assert [client.post(checkout, {"provider": "nope"}).status_code for _ in range(2)] == [409, 409]
    assert_429(client.post(checkout, {"provider": "dummy"}), window_seconds=60)
    manual = f"/pay/{payment_request.token}/manual"
    assert [client.post(manual, {"method": "cash"}).status_code for _ in range(2)] == [400, 400]
    assert_429(client.post(manual, {"method": "cash"}), window_seconds=3600)


def test_the_counts_are_in_redis_so_every_replica_shares_them(client, limits, payment_request, settings):
    client.get(f"/pay/{payment_request.token}/")
    keys = redis.Redis.from_url(settings.REDIS_URL).keys("sp:*rl:*")
    assert len(keys) == 1


def test_with_redis_down_the_limit_holds_in_the_process_without_waiting(client, limits, payment_request, settings):
    # Nothing listens on port 9: every connection is refused, as when Redis is down.
    settings.CACHES = {**settings.CACHES, "ratelimit": {**settings.CACHES["ratelimit"], "LOCATION": "redis://127.0.0.1:9/0"}}
    assert type(caches["ratelimit"]).__name__ == "RedisWithLocalFallbackCache"
    url = f"/pay/{payment_request.token}/"
    started = time.monotonic()
    assert [client.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert time.monotonic() - started < 2  # one failed connection attempt, then local counts


# --- Webhooks: refusals per account -----------------------------------------------------------


def test_refused_webhooks_are_limited_per_account_and_genuine_ones_still_pass(client, limits, account):
    body = surepay_body()
    answers = [post_webhook(client, body, signature="0" * 64).status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    throttled = post_webhook(client, body, signature="0" * 64)
    assert_429(throttled, window_seconds=60)
    assert throttled.json() == {"detail": "Too many failed deliveries for this account: try again later",
                                "code": "too_many_failures"}
    assert AuditLog.objects.filter(action="webhook.refused").count() == 3  # nothing written past the limit
    # The provider's correctly signed delivery is never held back by someone else's forgeries.
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    # Another account of another school counts apart.
    AccountFactory(school=SchoolFactory(code="kla"), provider="surepay", webhook_secret="kla")
    assert post_webhook(client, body, school_code="kla", signature="0" * 64).status_code == 401


def test_deliveries_to_unknown_schools_are_limited_per_address(client, limits, account):
    body = surepay_body()
    answers = [post_webhook(client, body, school_code=f"nope{n}", signature=sign(body)).status_code for n in range(4)]
    assert answers == [401, 401, 401, 429]
    assert not WebhookEvent.objects.exists()


# --- Admin login --------------------------------------------------------------------------------


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("bursar", password="correct horse battery", is_staff=True)


def login(client, password, address="192.0.2.10"):
    return client.post("/admin/login/?next=/admin/", {"username": "bursar", "password": password}, REMOTE_ADDR=address)


def test_admin_login_locks_after_five_failures_even_for_the_right_password(client, staff_user, settings):
    assert [login(client, "wrong").status_code for _ in range(4)] == [200] * 4
    locked = login(client, "wrong")
    assert locked.status_code == 429
    assert locked["Retry-After"] == str(15 * 60)
    assert b"Too many failed logins" in locked.content
    right = login(client, "correct horse battery")
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another address may still log in as that user (an attacker cannot lock staff out).
    assert login(client, "correct horse battery", address="198.51.100.2").status_code == 302


def test_a_successful_login_resets_the_count(client, staff_user):
    for _ in range(4):
        login(client, "wrong")
    assert login(client, "correct horse battery").status_code == 302
    client.logout()
    assert [login(client, "wrong").status_code for _ in range(4)] == [200] * 4
