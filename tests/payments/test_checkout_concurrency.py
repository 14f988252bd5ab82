"""A double click or two tabs cannot pay one request twice: real concurrent requests against a
live server on PostgreSQL. The provider is slow (half a second to create a checkout), so every
racer arrives while the first is still asking it."""

import re
import threading
import time

import httpx
import pytest

from payments.api_tokens import api_token_create
from payments.models import AuditLog, Payment
from providers import registry
from providers.base import CheckoutResult, ProviderAdapter
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db(transaction=True)


class SlowProvider(ProviderAdapter):
    slug = "slowpay"
    display_name = "Slow Pay"
    calls: list = []
    lock = threading.Lock()

    def create_checkout(self, *, payment, return_urls):
        with SlowProvider.lock:
            SlowProvider.calls.append(payment.pk)
        time.sleep(0.5)
        return CheckoutResult(redirect_url=f"https://slowpay.example/checkout/{payment.pk}", checkout_id=f"sp_{payment.pk.hex}")


@pytest.fixture
def slowpay(monkeypatch, school, settings, live_server):
    settings.PUBLIC_BASE_URL = live_server.url
    monkeypatch.setitem(registry.PROVIDERS, "slowpay", f"{__name__}.SlowProvider")
    registry._load.cache_clear()
    SlowProvider.calls = []
    yield AccountFactory(school=school, provider="slowpay")
    registry._load.cache_clear()


def race(count, make_request):
    """Prepare ``count`` clients, then fire their requests at the same moment."""
    barrier = threading.Barrier(count)
    responses = [None] * count

    def run(index):
        with httpx.Client(timeout=30) as client:
            send = make_request(index, client)
            barrier.wait()
            try:
                responses[index] = send()
            except Exception as exc:  # surfaced by the assertion below
                responses[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(response, httpx.Response) for response in responses), responses
    return responses


def pay_now(live_server, payment_request, providers):
    """Each racer is a browser tab: it loads the pay page (CSRF cookie and token), then clicks."""

    def make_request(index, client):
        url = f"{live_server.url}/pay/{payment_request.token}/"
        page = client.get(url)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        data = {"csrfmiddlewaretoken": token, "provider": providers[index]}
        return lambda: client.post(url + "checkout", data=data, headers={"Referer": url})

    return make_request


def test_ten_clicks_on_pay_now_make_one_payment(live_server, payment_request, slowpay):
    responses = race(10, pay_now(live_server, payment_request, ["slowpay"] * 10))
    payment = Payment.objects.get()
    # Every tab is sent to the one checkout: the first created it, the others waited and reused it.
    assert [response.status_code for response in responses] == [302] * 10
    assert {response.headers["Location"] for response in responses} == {f"https://slowpay.example/checkout/{payment.pk}"}
    assert SlowProvider.calls == [payment.pk]  # the provider was asked once
    assert AuditLog.objects.filter(action="payment.intent").count() == 1


def test_two_tabs_with_different_providers_make_one_payment(live_server, payment_request, slowpay, dummy_account):
    providers = ["slowpay", "dummy"] * 4
    responses = race(len(providers), pay_now(live_server, payment_request, providers))
    payment = Payment.objects.get()
    by_provider = {}
    for provider, response in zip(providers, responses, strict=True):
        by_provider.setdefault(provider, set()).add(response.status_code)
    winner, loser = (payment.provider, "dummy" if payment.provider == "slowpay" else "slowpay")
    # The winner's tabs reuse its checkout; the other provider's tabs are refused with a clear page.
    assert by_provider == {winner: {302}, loser: {409}}
    refused = next(r for p, r in zip(providers, responses, strict=True) if p == loser)
    assert "is already under way" in refused.text


def test_concurrent_api_checkouts_reuse_one_payment(live_server, payment_request, slowpay, staff):
    key = api_token_create(user=staff)

    def make_request(index, client):
        return lambda: client.post(
            f"{live_server.url}/api/payment-requests/{payment_request.pk}/checkout",
            json={"provider": "slowpay"},
            headers={"Authorization": f"Token {key}"},
        )

    responses = race(8, make_request)
    payment = Payment.objects.get()
    assert sorted(response.status_code for response in responses) == [200] * 7 + [201]
    assert {response.json()["payment_id"] for response in responses} == {str(payment.pk)}
    assert [response.json()["reused"] for response in responses].count(False) == 1
    assert SlowProvider.calls == [payment.pk]
