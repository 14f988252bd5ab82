"""SurePay (the generic aggregator scheme): its signature header, its body, its amounts. The
endpoint's behaviour for every provider (duplicates, school codes, limits, dead letters) is
tested with SurePay in tests/webhooks/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.status import PaymentStatus
from payments.models import Payment, TransactionFact
from providers.surepay.wire import Params, surepay_delivery, surepay_event
from tests.conftest import process_pending
from tests.providers.helpers import accepted, answer, load, post, raw, refused

pytestmark = pytest.mark.django_db


def signed(payload, secret="sekret"):
    return surepay_delivery(payload, secret)


def test_the_recorded_payload_is_a_payment_in_minor_units(client, account):
    delivery = signed(raw("surepay", "payment.succeeded"))
    assert answer(post(client, "surepay", delivery)) == accepted("evt-001")
    process_pending()
    payment = Payment.objects.get()
    assert (payment.external_txn_id, payment.amount_minor, payment.currency, payment.status) == (
        "txn-123", 100_000, "UGX", PaymentStatus.SUCCEEDED)  # fmt: skip
    assert payment.provider_student_id == "prov-001"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, refused("signature_missing", "Missing X-Signature header")),
        ({"X-Signature": "00" * 32}, refused("signature_invalid", "X-Signature does not match the body")),
        ({"X-Signature": "sha256=" + "00" * 32}, refused("signature_invalid", "X-Signature does not match the body")),
    ],
)
def test_a_delivery_without_the_right_hmac_is_refused(client, account, headers, expected):
    delivery = signed(raw("surepay", "payment.succeeded"))
    assert answer(post(client, "surepay", delivery.__class__(delivery.body, headers))) == expected
    assert not Payment.objects.exists()


def test_the_hmac_is_hex_in_either_case_and_either_secret_of_a_rotation(client, account):
    account.previous_webhook_secret = "old-sekret"
    account.previous_secret_expires_at = timezone.now() + timedelta(hours=1)
    account.save()
    body = raw("surepay", "payment.succeeded")
    upper = signed(body)
    upper = upper.__class__(upper.body, {"X-Signature": upper.headers["X-Signature"].upper()})
    assert post(client, "surepay", upper).status_code == 202
    other = load("surepay", "payment.succeeded") | {"event_id": "evt-002"}
    assert post(client, "surepay", signed(other, "old-sekret")).status_code == 202
    assert post(client, "surepay", signed(other | {"event_id": "evt-003"}, "wrong")).status_code == 401


def test_a_reversal_is_a_refund_keyed_by_its_event(client, account):
    paid = surepay_event("payment.succeeded", Params(amount_minor=100_000, currency="UGX", txn_id="txn-9", event_id="e1"))
    reversed_ = surepay_event(
        "payment.reversed", Params(amount_minor=100_000, refunded_minor=30_000, currency="UGX", txn_id="txn-9", event_id="e2")
    )
    assert reversed_["amount"] == "30000" and reversed_["status"] == "REVERSED"
    for payload in (paid, reversed_):
        assert post(client, "surepay", signed(payload)).status_code == 202
    process_pending()
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 30_000)
    assert TransactionFact.objects.filter(payment=payment, kind="refund").count() == 1


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"currency": "XYZ"}, [{"field": "currency", "message": "unknown currency 'XYZ'"}]),
        ({"currency": "ugx", "amount": "0"}, [{"field": "amount", "message": "amount must be greater than zero"}]),
        ({"amount": "1,000.50"}, [{"field": "amount", "message": "amount '1,000.50' has decimals but UGX has no minor unit"}]),
        ({"currency": 800}, [{"field": "currency", "message": "Input should be a valid string"}]),
        ({"amount": True}, [{"field": "amount", "message": "amount must be a number, got a boolean"}]),
    ],
)
def test_amount_and_currency_errors_name_their_field(client, account, fields, errors):
    payload = load("surepay", "payment.succeeded") | fields
    response = post(client, "surepay", signed(payload))
    assert response.status_code == 400
    assert response.json()["errors"] == errors


def test_a_lower_case_currency_is_the_iso_code(client, account):
    payload = load("surepay", "payment.succeeded") | {"currency": "kes", "amount": "1,500.50"}
    assert post(client, "surepay", signed(payload)).status_code == 202
    process_pending()
    assert (Payment.objects.get().currency, Payment.objects.get().amount_minor) == ("KES", 150_050)
