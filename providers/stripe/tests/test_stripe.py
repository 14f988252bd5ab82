"""Stripe: signature through the stripe SDK, Checkout Session events, Stripe's currency units,
and the Checkout/PaymentIntent/Refund API calls made by the real SDK against the fake."""

import json
import time

import pytest

from core.status import PaymentStatus as S
from payments.models import Payment, WebhookEvent
from providers.base import NormalizedStatus, ReturnUrls
from providers.errors import PayloadInvalid, ProviderRejected, ProviderUnavailable
from providers.registry import get_provider
from providers.stripe.adapter import from_stripe_amount, to_stripe_amount
from providers.stripe.fake import FakeStripe, decode_form
from providers.stripe.wire import stripe_delivery, stripe_event, stripe_signature_header
from providers.wire import Params
from tests.conftest import free_port, process_pending
from tests.factories import AccountFactory, PaymentFactory
from tests.providers.helpers import (
    accepted,
    answer,
    dead_letter,
    duplicate,
    fake_server,
    ignored,
    load,
    post,
    raw,
    refused,
)

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_5Wq9v2HkT3"
KEY = "sk_test_51School"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok", "https://pay.example.org/api/webhooks/stripe/ng")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="stripe", webhook_secret=SECRET, api_key=KEY, test_mode=True)


@pytest.fixture
def fake(settings):
    with fake_server(FakeStripe(api_key=KEY), settings, "STRIPE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def started(account):
    """The payment our checkout started: known by reference and session id, no PaymentIntent yet."""
    return PaymentFactory(
        account=account, external_txn_id=None, reference="INV-2025-0042", provider_checkout_id="cs_test_a1B2c3",
        amount_minor=150_000, currency="USD", payer={"email": "parent@example.com"},
    )


def signed(name: str, secrets=(SECRET,), timestamp=None):
    return stripe_delivery(raw("stripe", name), list(secrets), timestamp)


def test_recorded_success_is_accepted_and_normalized(client, account, started, fake_directory):
    delivery = signed("checkout.session.completed")
    assert answer(post(client, "stripe", delivery)) == accepted("evt_1QxYzABCdef")

    event = get_provider("stripe").verify_and_parse(body=delivery.body, headers=delivery.headers, account=account)
    assert event.as_json() == {
        "event_id": "evt_1QxYzABCdef",
        "event_type": "checkout.session.completed",
        "status": "succeeded",
        "external_txn_id": "pi_3QxYzABCdef",
        "amount_minor": 150_000,
        "currency": "USD",
        "reference": "INV-2025-0042",
        "checkout_id": "cs_test_a1B2c3",
        "provider_student_id": "prov-001",
        "payer": {"email": "parent@example.com", "name": "Ada Obi"},
        "refunded_total_minor": None,
        "refunds": (),
        "disputes": (),
        "occurred_at": "2025-01-01T00:00:00+00:00", "charge_id": "", "ignored_reason": "",
        "requires_confirmation": False,
    }
    process_pending()
    payment = Payment.objects.get()
    assert payment.pk == started.pk
    assert (payment.status, payment.amount_minor, payment.currency, payment.external_txn_id, payment.provider_student_id) == (
        S.SUCCEEDED, 150_000, "USD", "pi_3QxYzABCdef", "prov-001"
    )


def test_the_same_delivery_again_is_a_duplicate(client, account, started):
    delivery = signed("checkout.session.completed")
    post(client, "stripe", delivery)
    assert answer(post(client, "stripe", delivery)) == duplicate("evt_1QxYzABCdef")
    assert WebhookEvent.objects.count() == 1


def test_a_tampered_body_is_refused(client, account):
    delivery = signed("checkout.session.completed")
    tampered = delivery.__class__(delivery.body.replace(b"150000", b"990000"), delivery.headers)
    assert answer(post(client, "stripe", tampered)) == refused("signature_invalid", "Stripe-Signature does not match the body")
    assert not WebhookEvent.objects.exists()


def test_a_wrong_secret_is_refused(client, account):
    delivery = signed("checkout.session.completed", secrets=["whsec_someone_else"])
    assert answer(post(client, "stripe", delivery)) == refused("signature_invalid", "Stripe-Signature does not match the body")


def test_an_expired_timestamp_is_refused(client, account):
    delivery = signed("checkout.session.completed", timestamp=int(time.time()) - 301)
    assert answer(post(client, "stripe", delivery)) == refused(
        "signature_invalid", "Stripe-Signature timestamp is older than 300 seconds"
    )


def test_a_missing_header_is_refused(client, account):
    response = client.post("/api/webhooks/stripe/ng", data=raw("stripe", "checkout.session.completed"), content_type="application/json")
    assert answer(response) == refused("signature_missing", "Missing Stripe-Signature header")


def test_any_of_several_v1_signatures_and_the_previous_secret_verify(client, account):
    from django.utils import timezone

    body = raw("stripe", "checkout.session.completed")
    # Stripe sends one v1 per secret while an endpoint secret is being rolled.
    header = stripe_signature_header(body, ["whsec_rolled_away", SECRET])
    assert header.count("v1=") == 2
    assert post(client, "stripe", stripe_delivery(body, ["whsec_rolled_away", SECRET])).status_code == 202
    account.previous_webhook_secret, account.webhook_secret = SECRET, "whsec_new_one"
    account.previous_secret_expires_at = timezone.now() + timezone.timedelta(hours=1)
    account.save()
    other = stripe_delivery(json.dumps(stripe_event("payment_intent.succeeded", Params(reference="X"))).encode(), [SECRET])
    assert post(client, "stripe", other).status_code == 202


def test_a_missing_field_is_a_dead_letter(client, account):
    payload = load("stripe", "checkout.session.completed")
    del payload["data"]["object"]["amount_total"]
    response = post(client, "stripe", stripe_delivery(json.dumps(payload, default=str).encode(), [SECRET]))
    assert answer(response) == (
        400,
        {"detail": "Invalid webhook payload", "code": "invalid_payload",
         "errors": [{"field": "data.object.amount_total", "message": "Field required"}]},
    )
    assert (dead_letter().event_type, dead_letter().errors) == ("checkout.session.completed", response.json()["errors"])


@pytest.mark.parametrize(
    ("stripe_amount", "currency", "minor"),
    [
        (150_000, "USD", 150_000),
        (100_000, "UGX", 100_000),  # zero-decimal on Stripe and in ISO
        (5_000, "RWF", 5_000),
        (10_000, "ISK", 100),  # Stripe keeps ISK two-decimal; ISO has no minor unit
        (5_000, "MGA", 500_000),  # zero-decimal on Stripe, two decimals in ISO
        (123_456, "HUF", 123_456),
        (98_765, "TWD", 98_765),
        (12_340, "KWD", 12_340),
    ],
)
def test_stripe_units_to_minor_units(account, stripe_amount, currency, minor):
    payload = load("stripe", "checkout.session.completed")
    payload["data"]["object"].update(amount_total=stripe_amount, currency=currency.lower())
    event = get_provider("stripe").parse(payload=payload, headers={}, account=account)
    assert (event.amount_minor, event.currency) == (minor, currency)
    assert to_stripe_amount(minor, currency) == stripe_amount


def test_an_isk_amount_with_aurar_is_refused_not_rounded(account):
    payload = load("stripe", "checkout.session.completed")
    payload["data"]["object"].update(amount_total=150, currency="isk")
    with pytest.raises(PayloadInvalid) as caught:
        get_provider("stripe").parse(payload=payload, headers={}, account=account)
    assert caught.value.errors == [
        {"field": "data.object.amount_total", "message": "150 is not a whole number of ISK units of 10^0"}
    ]
    with pytest.raises(Exception, match="multiples of 10"):
        to_stripe_amount(12_345, "KWD")
    assert from_stripe_amount(0, "UGX") == 0


def test_a_partial_then_full_refund(client, account, started):
    started.status, started.external_txn_id = S.SUCCEEDED, "pi_3QxYzABCdef"
    started.save()
    assert post(client, "stripe", signed("charge.refunded")).status_code == 202
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 50_000)

    payload = load("stripe", "charge.refunded")
    payload["id"] = "evt_3QxZ2Refund"
    payload["data"]["object"].update(amount_refunded=150_000, refunded=True)
    assert post(client, "stripe", stripe_delivery(json.dumps(payload, default=str).encode(), [SECRET])).status_code == 202
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.REFUNDED, 150_000)


def test_an_async_failure_fails_the_started_payment(client, account, started):
    assert post(client, "stripe", signed("checkout.session.async_payment_failed")).status_code == 202
    process_pending()
    started.refresh_from_db()
    assert started.status == S.FAILED


def test_an_event_about_no_payment_is_stored_and_ignored(client, account):
    body = json.dumps(stripe_event("customer.created", Params(event_id="evt_customer_1"))).encode()
    assert answer(post(client, "stripe", stripe_delivery(body, [SECRET]))) == ignored(
        "evt_customer_1", "customer.created is not about a payment, a refund or a dispute"
    )
    assert process_pending() == []
    assert not Payment.objects.exists()


def test_a_live_event_does_not_move_a_test_account(client, account, started):
    payload = load("stripe", "checkout.session.completed")
    payload["livemode"] = True
    post(client, "stripe", stripe_delivery(json.dumps(payload, default=str).encode(), [SECRET]))
    process_pending()
    started.refresh_from_db()
    assert started.status == S.PENDING


# --- The API, through the real stripe SDK over a socket -----------------------------------------


def test_create_checkout_sends_the_documented_request(account, fake, started):
    result = get_provider("stripe").create_checkout(payment=started, return_urls=URLS)
    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/checkout/sessions")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == f"checkout-{started.pk}"
    metadata = {"reference": "INV-2025-0042", "payment_id": str(started.pk)}
    assert decode_form(request.body) == {
        "mode": "payment",
        "line_items": {"0": {"price_data": {"currency": "usd", "unit_amount": "150000",
                                            "product_data": {"name": "Nile Gardens School fees (INV-2025-0042)"}},
                             "quantity": "1"}},
        "success_url": URLS.success_url,
        "cancel_url": URLS.cancel_url,
        "client_reference_id": "INV-2025-0042",
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "customer_email": "parent@example.com",
    }
    session_id = next(iter(fake.sessions))
    assert result.checkout_id == session_id
    assert result.redirect_url == f"https://checkout.stripe.test/c/pay/{session_id}"
    assert result.provider_data == {"stripe_session_id": session_id}


def test_a_ugx_checkout_is_sent_in_whole_shillings(account, fake, started):
    started.amount_minor, started.currency = 250_000, "UGX"
    get_provider("stripe").create_checkout(payment=started, return_urls=URLS)
    form = decode_form(fake.requests[-1].body)
    assert form["line_items"]["0"]["price_data"]["unit_amount"] == "250000"
    assert form["line_items"]["0"]["price_data"]["currency"] == "ugx"


def test_fetch_status_follows_the_session_and_its_refunds(account, fake, started):
    adapter = get_provider("stripe")
    started.provider_checkout_id = adapter.create_checkout(payment=started, return_urls=URLS).checkout_id
    assert adapter.fetch_status(payment=started).status == S.PENDING
    session = fake.complete(started.provider_checkout_id)
    intent = session["payment_intent"]
    assert adapter.fetch_status(payment=started) == NormalizedStatus(
        S.SUCCEEDED, intent, 150_000, "USD", refunded_total_minor=0, detail="paid"
    )
    assert fake.requests[-1].path == f"/v1/payment_intents/{intent}"

    started.external_txn_id, started.status = intent, S.SUCCEEDED
    refund = adapter.refund(payment=started, amount_minor=40_000, idempotency_key="refund-1", reason="Overpaid")
    request = fake.requests[-1]
    assert (request.path, decode_form(request.body)) == (
        "/v1/refunds",
        {"payment_intent": intent, "amount": "40000",
         "metadata": {"reference": "INV-2025-0042", "refund_request": "refund-1", "reason": "Overpaid"}},
    )
    assert request.headers["Idempotency-Key"] == "refund-1"
    assert (refund.status, refund.amount_minor, refund.refund_id.startswith("re_")) == ("succeeded", 40_000, True)
    assert adapter.fetch_status(payment=started) == NormalizedStatus(
        S.SUCCEEDED, intent, 150_000, "USD", refunded_total_minor=40_000, detail="refunded"
    )


def test_an_expired_session(account, fake, started):
    adapter = get_provider("stripe")
    started.provider_checkout_id = adapter.create_checkout(payment=started, return_urls=URLS).checkout_id
    fake.expire(started.provider_checkout_id)
    assert adapter.fetch_status(payment=started).status == S.EXPIRED


def test_a_live_account_refuses_a_test_key_and_a_dead_api_is_retried_later(account, fake, started, settings):
    account.test_mode = False
    with pytest.raises(ProviderRejected, match="live but its API key is a test key"):
        get_provider("stripe").create_checkout(payment=started, return_urls=URLS)
    account.test_mode = True
    settings.STRIPE_API_BASE_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderUnavailable):
        get_provider("stripe").create_checkout(payment=started, return_urls=URLS)
    assert not fake.requests
