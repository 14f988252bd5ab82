"""Paystack: HMAC-SHA512 keyed with the secret API key, events without ids, subunit amounts,
refund deltas, and the transaction API against the fake."""

import json

import pytest

from core.status import PaymentStatus as S
from payments.models import Payment, WebhookEvent
from providers.base import NormalizedStatus, RefundResult, ReturnUrls
from providers.errors import PayloadInvalid, ProviderRejected
from providers.paystack.adapter import from_paystack_amount
from providers.paystack.fake import FakePaystack
from providers.paystack.wire import paystack_delivery
from providers.registry import get_provider
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory, report
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

KEY = "sk_test_0a1b2c3d4e5f"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def account(school):
    # For Paystack the webhook key *is* the secret API key.
    return AccountFactory(school=school, provider="paystack", webhook_secret=KEY, api_key=KEY, test_mode=True)


@pytest.fixture
def fake(settings):
    with fake_server(FakePaystack(secret_key=KEY), settings, "PAYSTACK_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def started(account):
    return PaymentFactory(account=account, external_txn_id=None, reference="INV-2025-0042-a1", amount_minor=2_500_000,
                          currency="NGN", payer={"email": "parent@example.com"})


def signed(name, key=KEY):
    return paystack_delivery(raw("paystack", name), key)


def test_recorded_success_is_accepted_and_normalized(client, account, started, fake_directory):
    delivery = signed("charge.success")
    assert answer(post(client, "paystack", delivery)) == accepted("charge.success:302961")
    event = get_provider("paystack").verify_and_parse(body=delivery.body, headers=delivery.headers, account=account)
    assert event.as_json() == {
        "event_id": "charge.success:302961", "event_type": "charge.success", "status": "succeeded",
        "external_txn_id": "302961", "amount_minor": 2_500_000, "currency": "NGN", "reference": "INV-2025-0042-a1",
        "checkout_id": "", "provider_student_id": "prov-001",
        "payer": {"email": "parent@example.com", "customer_code": "CUS_qo38as2hpsgk2r0", "first_name": "Ada", "last_name": "Obi"},
        "refunded_total_minor": None, "refunds": (), "disputes": (), "occurred_at": None, "charge_id": "", "ignored_reason": "", "requires_confirmation": False,
    }
    process_pending()
    payment = Payment.objects.get()
    assert (payment.pk, payment.status, payment.amount_minor, payment.currency, payment.external_txn_id) == (
        started.pk, S.SUCCEEDED, 2_500_000, "NGN", "302961")


def test_a_redelivery_is_a_duplicate_by_the_built_event_id(client, account):
    post(client, "paystack", signed("charge.success"))
    assert answer(post(client, "paystack", signed("charge.success"))) == duplicate("charge.success:302961")
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize("tamper", ["body", "key"])
def test_a_tampered_body_or_wrong_key_is_refused(client, account, tamper):
    delivery = signed("charge.success", key="sk_test_other" if tamper == "key" else KEY)
    if tamper == "body":
        delivery = delivery.__class__(delivery.body.replace(b"2500000", b"9500000"), delivery.headers)
    assert answer(post(client, "paystack", delivery)) == refused("signature_invalid", "x-paystack-signature does not match the body")
    assert not WebhookEvent.objects.exists()


def test_a_sha256_signature_is_not_enough(client, account):
    import hashlib
    import hmac

    body = raw("paystack", "charge.success")
    sha256 = hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    response = client.post("/api/webhooks/paystack/ng", data=body, content_type="application/json",
                           headers={"x-paystack-signature": sha256})
    assert response.status_code == 401


def test_a_missing_field_is_a_dead_letter(client, account):
    payload = load("paystack", "charge.success")
    del payload["data"]["reference"]
    response = post(client, "paystack", paystack_delivery(json.dumps(payload, default=str).encode(), KEY))
    assert answer(response) == (400, {"detail": "Invalid webhook payload", "code": "invalid_payload",
                                      "errors": [{"field": "data.reference", "message": "Field required"}]})
    assert dead_letter().event_type == "charge.success"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [(2_500_000, "NGN", 2_500_000), ("5000", "GHS", 5000), (150_050, "KES", 150_050), (99, "ZAR", 99), (100, "USD", 100)],
)
def test_subunits_are_iso_minor_units(amount, currency, minor):
    assert from_paystack_amount(amount, currency) == minor


@pytest.mark.parametrize(("amount", "currency"), [(5000, "XOF"), ("50.5", "NGN"), ("-5", "NGN"), (True, "NGN")])
def test_unconfirmed_or_fractional_amounts_are_field_errors(account, amount, currency):
    payload = load("paystack", "charge.success")
    payload["data"].update(amount=amount, currency=currency)
    with pytest.raises(PayloadInvalid) as caught:
        get_provider("paystack").parse(payload=payload, headers={}, account=account)
    assert [error["field"] for error in caught.value.errors] == ["data.amount"]


def test_refunds_are_deltas(client, account, started):
    report(started, status=S.SUCCEEDED, external_txn_id="302961")
    assert answer(post(client, "paystack", signed("refund.processed"))) == accepted(
        "refund.processed:INV-2025-0042-a1:CHG3KT1FG3L8MHA3"
    )
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 1_000_000)
    second = load("paystack", "refund.processed")
    second["data"].update(refund_reference="CHG3KT1FG3L8MHA4", amount="1500000")
    post(client, "paystack", paystack_delivery(json.dumps(second, default=str).encode(), KEY))
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.REFUNDED, 2_500_000)


def test_a_transfer_concerns_no_payment(client, account):
    assert answer(post(client, "paystack", signed("transfer.success"))) == ignored(
        "transfer.success:37272792", "transfer.success is not about a payment, a refund or a chargeback"
    )
    assert process_pending() == []
    assert not Payment.objects.exists()


def test_a_live_charge_does_not_move_a_test_account(client, account, started):
    payload = load("paystack", "charge.success")
    payload["data"]["domain"] = "live"
    post(client, "paystack", paystack_delivery(json.dumps(payload, default=str).encode(), KEY))
    process_pending()
    started.refresh_from_db()
    assert started.status == S.PENDING


def test_checkout_verify_and_refund_requests(account, fake, started):
    adapter = get_provider("paystack")
    result = adapter.create_checkout(payment=started, return_urls=URLS)
    request = fake.requests[-1]
    assert (request.method, request.path, request.headers["Authorization"]) == ("POST", "/transaction/initialize", f"Bearer {KEY}")
    assert request.json() == {
        "email": "parent@example.com", "amount": 2_500_000, "currency": "NGN", "reference": "INV-2025-0042-a1",
        "callback_url": URLS.success_url,
        "metadata": {"payment_id": str(started.pk), "school": "ng", "cancel_action": URLS.cancel_url},
    }
    assert result.redirect_url.startswith("https://checkout.paystack.test/ac_")

    assert adapter.fetch_status(payment=started).status == S.PENDING  # "abandoned": not finished yet
    fake.settle("INV-2025-0042-a1")
    txn_id = str(fake.transactions["INV-2025-0042-a1"]["id"])
    assert adapter.fetch_status(payment=started) == NormalizedStatus(S.SUCCEEDED, txn_id, 2_500_000, "NGN", detail="Successful")
    assert fake.requests[-1].path == "/transaction/verify/INV-2025-0042-a1"

    started.status = S.SUCCEEDED
    refund = adapter.refund(payment=started, amount_minor=500_000, idempotency_key="refund-1", reason="Overpaid")
    assert (fake.requests[-1].path, fake.requests[-1].json()) == (
        "/refund", {"transaction": "INV-2025-0042-a1", "amount": 500_000, "currency": "NGN", "merchant_note": "Overpaid"})
    refund_id = max(fake.refunds)
    assert refund == RefundResult(str(refund_id), "pending", 500_000, "pending")


def test_checkout_needs_an_email(account, fake, started):
    started.payer = {}
    with pytest.raises(ProviderRejected, match="email"):
        get_provider("paystack").create_checkout(payment=started, return_urls=URLS)
    assert not fake.requests
