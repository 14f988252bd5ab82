"""Omise: Omise-Signature over timestamp and body with the base64-decoded secret, a 5-minute
window, and every event confirmed by GET /charges/<id>."""

import base64
import time

import pytest

from core.status import PaymentStatus as S
from payments.models import WebhookEvent
from providers.base import NormalizedStatus, ReturnUrls
from providers.errors import PayloadInvalid
from providers.omise.fake import FakeOmise
from providers.omise.wire import omise_delivery
from providers.registry import get_provider
from providers.wire import dumps
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory, report
from tests.providers.helpers import accepted, answer, dead_letter, duplicate, fake_server, load, post, raw, refused

pytestmark = pytest.mark.django_db

SECRET = base64.b64encode(b"omise-webhook-secret-bytes-01").decode()
KEY = "skey_test_5xuy4vnqschool"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="omise", webhook_secret=SECRET, api_key=KEY, test_mode=True)


@pytest.fixture
def fake(settings):
    with fake_server(FakeOmise(secret_key=KEY), settings, "OMISE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def started(account, fake):
    payment = PaymentFactory(account=account, external_txn_id=None, reference="INV-2025-0042", amount_minor=350_000, currency="THB")
    result = get_provider("omise").create_checkout(payment=payment, return_urls=URLS)
    payment.provider_checkout_id, payment.external_txn_id = result.checkout_id, result.external_txn_id
    payment.save()
    return payment


def charge_event(started, status="successful"):
    payload = load("omise", "charge.complete")
    payload["data"].update(id=started.external_txn_id, status=status)
    return payload


def test_recorded_success_is_accepted_normalized_and_confirmed(client, account, started, fake):
    delivery = omise_delivery(dumps(charge_event(started)), [SECRET])
    assert answer(post(client, "omise", delivery)) == accepted("evnt_test_5xuy4w91xqz7d1w9u0t")
    event = get_provider("omise").verify_and_parse(body=delivery.body, headers=delivery.headers, account=account)
    assert event.as_json() == {
        "event_id": "evnt_test_5xuy4w91xqz7d1w9u0t", "event_type": "charge.complete", "status": "succeeded",
        "external_txn_id": started.external_txn_id, "amount_minor": 350_000, "currency": "THB",
        "reference": "INV-2025-0042", "checkout_id": started.external_txn_id, "provider_student_id": "", "payer": {},
        "refunded_total_minor": None, "refunds": (), "disputes": (), "occurred_at": None, "charge_id": "", "ignored_reason": "", "requires_confirmation": True,
    }
    fake.settle(started.external_txn_id, "successful")
    process_pending()
    assert fake.requests[-1].path == f"/charges/{started.external_txn_id}"
    started.refresh_from_db()
    assert (started.status, started.amount_minor) == (S.SUCCEEDED, 350_000)


def test_a_forged_success_is_not_believed(client, account, started, fake):
    post(client, "omise", omise_delivery(dumps(charge_event(started)), [SECRET]))
    fake.settle(started.external_txn_id, "failed")
    process_pending()
    started.refresh_from_db()
    assert started.status == S.FAILED


@pytest.mark.parametrize(("case", "expected"), [
    ("tampered", refused("signature_invalid", "Omise-Signature does not match the body")),
    ("wrong secret", refused("signature_invalid", "Omise-Signature does not match the body")),
    ("expired", refused("signature_invalid", "Omise-Signature-Timestamp is more than 300 seconds away")),
    ("from the future", refused("signature_invalid", "Omise-Signature-Timestamp is more than 300 seconds away")),
    ("missing", refused("signature_missing", "Missing Omise-Signature or Omise-Signature-Timestamp header")),
])
def test_bad_signatures_are_refused(client, account, case, expected):
    body = raw("omise", "charge.complete")
    timestamp = {"expired": int(time.time()) - 301, "from the future": int(time.time()) + 301}.get(case)
    delivery = omise_delivery(body, ["b3RoZXI=" if case == "wrong secret" else SECRET], timestamp)
    if case == "tampered":
        delivery = delivery.__class__(body.replace(b"350000", b"950000"), delivery.headers)
    if case == "missing":
        delivery = delivery.__class__(body, {})
    assert answer(post(client, "omise", delivery)) == expected
    assert not WebhookEvent.objects.exists()


def test_any_signature_in_the_list_verifies(client, account):
    assert post(client, "omise", omise_delivery(raw("omise", "charge.complete"), ["b3RoZXI=", SECRET])).status_code == 202


def test_a_redelivery_is_a_duplicate(client, account):
    delivery = omise_delivery(raw("omise", "charge.complete"), [SECRET])
    post(client, "omise", delivery)
    assert answer(post(client, "omise", delivery)) == duplicate("evnt_test_5xuy4w91xqz7d1w9u0t")


def test_a_missing_field_is_a_dead_letter(client, account):
    payload = load("omise", "charge.complete")
    del payload["data"]["amount"]
    response = post(client, "omise", omise_delivery(dumps(payload), [SECRET]))
    assert answer(response) == (400, {"detail": "Invalid webhook payload", "code": "invalid_payload",
                                      "errors": [{"field": "data.amount", "message": "Field required"}]})
    assert dead_letter().event_type == "charge.complete"


@pytest.mark.parametrize(("amount", "currency", "minor"), [(350_000, "thb", 350_000), (5_000, "jpy", 5_000), (1_999, "sgd", 1_999)])
def test_smallest_units(account, amount, currency, minor):
    payload = load("omise", "charge.complete")
    payload["data"].update(amount=amount, currency=currency)
    event = get_provider("omise").parse(payload=payload, headers={}, account=account)
    assert (event.amount_minor, event.currency) == (minor, currency.upper())


def test_a_currency_omise_does_not_charge_in_is_a_field_error(account):
    payload = load("omise", "charge.complete")
    payload["data"].update(amount=5000, currency="ugx")
    with pytest.raises(PayloadInvalid) as caught:
        get_provider("omise").parse(payload=payload, headers={}, account=account)
    assert caught.value.errors == [{"field": "data.amount", "message": "Omise does not charge in UGX"}]


def test_a_refund_is_confirmed_by_the_charge(client, account, started, fake):
    fake.settle(started.external_txn_id, "successful")
    report(started, status=S.SUCCEEDED)
    refund = get_provider("omise").refund(payment=started, amount_minor=100_000, idempotency_key="refund-1")
    request = fake.requests[-1]
    assert (request.path, request.body) == (
        f"/charges/{started.external_txn_id}/refunds", b"amount=100000&metadata%5Brefund_request%5D=refund-1")
    assert request.headers["Idempotency-Key"] == "refund-1"
    assert (refund.status, refund.amount_minor, refund.refund_id.startswith("rfnd_test_")) == ("succeeded", 100_000, True)
    payload = load("omise", "refund.create")
    payload["data"]["charge"] = started.external_txn_id
    assert post(client, "omise", omise_delivery(dumps(payload), [SECRET])).status_code == 202
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 100_000)


def test_charge_request_and_status(account, fake, started):
    request = fake.requests[0]
    assert (request.method, request.path) == ("POST", "/charges")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    from urllib.parse import parse_qsl

    assert dict(parse_qsl(request.body.decode())) == {
        "amount": "350000", "currency": "thb", "return_uri": URLS.success_url, "source[type]": "promptpay",
        "description": "Nile Gardens School fees INV-2025-0042", "metadata[reference]": "INV-2025-0042",
        "metadata[payment_id]": str(started.pk),
    }
    assert get_provider("omise").fetch_status(payment=started) == NormalizedStatus(
        S.PENDING, started.external_txn_id, 350_000, "THB", detail="pending")
