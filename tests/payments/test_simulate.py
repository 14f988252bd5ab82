"""The dummy provider's checkout page runs the whole loop with no outside service: it posts a
signed webhook to this service (over HTTP, to a live server) and a real worker applies it."""

import re

import httpx
import pytest

from payments import services
from payments.models import Payment, PaymentRequest, ReviewFlag, WebhookEvent
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def pay_on_simulate_page(base_url, payment, *, outcome="succeeded", amount=None):
    with httpx.Client(base_url=base_url, timeout=20) as browser:
        page = browser.get(f"/payments/simulate/{payment.pk}")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return browser.post(
            f"/payments/simulate/{payment.pk}",
            data={"csrfmiddlewaretoken": token, "outcome": outcome, "amount": amount or payment.amount_display.split(" ")[1]},
            headers={"Referer": f"{base_url}/payments/simulate/{payment.pk}"},
        )


@pytest.fixture
def started(live_server, settings, payment_request, dummy_account):
    settings.PUBLIC_BASE_URL = live_server.url
    return services.payment_checkout_start(payment_request_id=payment_request.pk, provider="dummy").payment


def test_paying_on_the_simulate_page_pays_the_request(live_server, started, payment_request, celery_worker):
    response = pay_on_simulate_page(live_server.url, started)
    assert (response.status_code, response.headers["Location"]) == (302, f"/payments/{started.pk}/thanks")
    event = WebhookEvent.objects.get()
    assert (event.event_type, event.external_event_id) == ("payment.succeeded", f"devt_{started.pk.hex}_succeeded")
    wait_for(lambda: PaymentRequest.objects.get(pk=payment_request.pk).status == PaymentRequest.Status.PAID, timeout=15)
    assert Payment.objects.get().external_txn_id.startswith("dtxn_")
    # A second click sends the same webhook again: a duplicate, no second payment.
    pay_on_simulate_page(live_server.url, started)
    assert WebhookEvent.objects.count() == 1


def test_paying_a_different_amount_flags_it(live_server, started, payment_request, celery_worker):
    pay_on_simulate_page(live_server.url, started, amount="400,000")
    wait_for(lambda: Payment.objects.get().review_flag == ReviewFlag.AMOUNT_MISMATCH, timeout=15)
    assert PaymentRequest.objects.get().status == PaymentRequest.Status.OPEN


def test_declining_fails_the_payment(live_server, started, celery_worker):
    pay_on_simulate_page(live_server.url, started, outcome="failed")
    wait_for(lambda: Payment.objects.get().status == "failed", timeout=15)


def test_a_bad_amount_is_a_form_error(live_server, started):
    response = pay_on_simulate_page(live_server.url, started, amount="1.5")
    assert response.status_code == 400
    assert "has decimals but UGX has no minor unit" in response.text
    assert WebhookEvent.objects.count() == 0
