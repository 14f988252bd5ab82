"""Chapa: x-chapa-signature over the raw body (the constant chapa-signature is never enough),
flat payloads keyed by tx_ref, decimal-string amounts, confirmation through the verify API."""

from urllib.parse import parse_qsl

import pytest

from core.status import PaymentStatus as S
from payments.models import WebhookEvent
from providers.base import NormalizedStatus, RefundResult, ReturnUrls
from providers.chapa.fake import FakeChapa
from providers.chapa.wire import chapa_delivery
from providers.errors import PayloadInvalid, ProviderRejected
from providers.registry import get_provider
from providers.wire import dumps, hmac_hex
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

SECRET = "chapa-secret-hash-1"
KEY = "CHASECK_TEST-school0123"
REF = "INV-2025-0042-a1"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="chapa", webhook_secret=SECRET, api_key=KEY, test_mode=True)


@pytest.fixture
def fake(settings):
    with fake_server(FakeChapa(secret_key=KEY), settings, "CHAPA_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def started(account, fake):
    """A checkout really started at the fake, as the checkout service would."""
    payment = PaymentFactory(account=account, external_txn_id=None, reference=REF, amount_minor=450_000, currency="ETB",
                             payer={"email": "parent@example.com", "name": "Abebe Bikila", "phone": "0900000000"})
    get_provider("chapa").create_checkout(payment=payment, return_urls=URLS)
    return payment


def signed(name="charge.success", secret=SECRET):
    return chapa_delivery(raw("chapa", name), secret)


def test_recorded_success_is_accepted_normalized_and_confirmed(client, account, started, fake):
    delivery = signed()
    assert answer(post(client, "chapa", delivery)) == accepted(f"charge.success:{REF}")
    event = get_provider("chapa").verify_and_parse(body=delivery.body, headers=delivery.headers, account=account)
    assert event.as_json() == {
        "event_id": f"charge.success:{REF}", "event_type": "charge.success", "status": "succeeded",
        "external_txn_id": "AP634JFwEbxd", "amount_minor": 450_000, "currency": "ETB", "reference": REF,
        "checkout_id": "", "provider_student_id": "", "payer": {"name": "Abebe Bikila", "phone": "251900000000"},
        "refunded_total_minor": None, "refunds": (), "disputes": (), "occurred_at": None, "charge_id": "", "ignored_reason": "", "requires_confirmation": True,
    }
    fake.settle(REF, "success")
    assert process_pending() == ["pending -> processing; confirmed: processing -> succeeded; student pending"]
    assert fake.requests[-1].path == f"/v1/transaction/verify/{REF}"
    started.refresh_from_db()
    assert (started.status, started.amount_minor, started.currency) == (S.SUCCEEDED, 450_000, "ETB")


def test_a_forged_success_is_not_believed(client, account, started, fake):
    post(client, "chapa", signed())
    fake.settle(REF, "failed")  # Chapa's API says otherwise
    process_pending()
    started.refresh_from_db()
    assert started.status == S.FAILED


def test_the_constant_chapa_signature_alone_is_refused(client, account):
    delivery = signed()
    only_constant = {"chapa-signature": delivery.headers["chapa-signature"]}
    response = client.post("/api/webhooks/chapa/ng", data=delivery.body, content_type="application/json", headers=only_constant)
    assert answer(response) == refused("signature_missing", "Missing x-chapa-signature header")


@pytest.mark.parametrize("tamper", ["body", "secret"])
def test_a_tampered_body_or_wrong_secret_is_refused(client, account, tamper):
    delivery = signed(secret="someone-else" if tamper == "secret" else SECRET)
    if tamper == "body":
        delivery = delivery.__class__(delivery.body.replace(b"4500.00", b"9500.00"), delivery.headers)
    assert answer(post(client, "chapa", delivery)) == refused("signature_invalid", "x-chapa-signature does not match the body")
    assert not WebhookEvent.objects.exists()


def test_a_redelivery_is_a_duplicate(client, account):
    post(client, "chapa", signed())
    assert answer(post(client, "chapa", signed())) == duplicate(f"charge.success:{REF}")


def test_a_missing_field_is_a_dead_letter(client, account):
    payload = load("chapa", "charge.success")
    del payload["tx_ref"]
    response = post(client, "chapa", chapa_delivery(dumps(payload), SECRET))
    assert answer(response) == (400, {"detail": "Invalid webhook payload", "code": "invalid_payload",
                                      "errors": [{"field": "tx_ref", "message": "Field required"}]})
    assert dead_letter().event_type == "charge.success"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("4500.00", "ETB", 450_000), ("4,500.5", "ETB", 450_050), ("0.01", "USD", 1), ("100", "USD", 10_000)],
)
def test_decimal_strings_in_major_units(account, amount, currency, minor):
    payload = load("chapa", "charge.success")
    payload.update(amount=amount, currency=currency)
    assert get_provider("chapa").parse(payload=payload, headers={}, account=account).amount_minor == minor


@pytest.mark.parametrize("amount", ["45.001", "1e3", "-5", "", "NaN"])
def test_ambiguous_amounts_are_field_errors(account, amount):
    payload = load("chapa", "charge.success")
    payload["amount"] = amount
    with pytest.raises(PayloadInvalid) as caught:
        get_provider("chapa").parse(payload=payload, headers={}, account=account)
    assert [error["field"] for error in caught.value.errors] == ["amount"]


def test_a_refund_is_applied_from_the_signed_body(client, account, started):
    report(started, status=S.SUCCEEDED)
    assert answer(post(client, "chapa", signed("charge.refunded"))) == accepted(
        f"charge.refunded:{REF}:2025-01-17T08:02:40.000000Z")
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 150_000)


def test_payouts_and_other_mode_events_move_nothing(client, account, started):
    payout = load("chapa", "charge.success")
    payout.update(event="payout.success", type="Payout", tx_ref="PO-1", reference="MYMER3434989")
    assert answer(post(client, "chapa", chapa_delivery(dumps(payout), SECRET))) == ignored(
        "payout.success:MYMER3434989", "payouts are money paid out, not a payment"
    )
    live = load("chapa", "charge.success")
    live["mode"] = "live"
    assert answer(post(client, "chapa", chapa_delivery(dumps(live), SECRET))) == ignored(
        f"charge.success:{REF}", "a live-mode event on a test account"
    )
    assert process_pending() == []
    started.refresh_from_db()
    assert started.status == S.PENDING


def test_checkout_and_verify_requests(account, fake, started):
    initialize = fake.requests[0]
    assert (initialize.method, initialize.path, initialize.headers["Authorization"]) == (
        "POST", "/v1/transaction/initialize", f"Bearer {KEY}")
    assert initialize.json() == {
        "amount": "4500.00", "currency": "ETB", "tx_ref": REF, "return_url": URLS.success_url,
        "customization": {"title": "School fees", "description": f"Fees Nile Gardens School {REF}"},
        "meta": {"payment_id": str(started.pk), "student_id": ""},
        "email": "parent@example.com", "first_name": "Abebe", "last_name": "Bikila", "phone_number": "0900000000",
    }
    adapter = get_provider("chapa")
    assert adapter.fetch_status(payment=started).status == S.PENDING
    fake.settle(REF, "success")
    reference = fake.transactions[REF]["reference"]
    assert adapter.fetch_status(payment=started) == NormalizedStatus(S.SUCCEEDED, reference, 450_000, "ETB", detail="Payment details")
    started.external_txn_id = reference
    refund = adapter.refund(payment=started, amount_minor=150_000, idempotency_key="refund-abc", reason="Overpaid")
    request = fake.requests[-1]
    assert (request.method, request.path, request.headers["Content-Type"]) == (
        "POST", f"/v1/refund/{reference}", "application/x-www-form-urlencoded")
    assert dict(parse_qsl(request.body.decode())) == {"amount": "1500.00", "reference": "refund-abc", "reason": "Overpaid"}
    # Chapa names no refund of its own: our unique reference keys it, and only its webhook says it is done.
    assert refund == RefundResult("refund-abc", "pending", 150_000, "Refund initiated successfully")
    with pytest.raises(ProviderRejected, match="Refund reference has been used before"):
        adapter.refund(payment=started, amount_minor=100, idempotency_key="refund-abc")
    with pytest.raises(ProviderRejected, match="greater than the refundable amount"):
        adapter.refund(payment=started, amount_minor=300_001, idempotency_key="refund-def")


def test_the_signature_is_over_the_raw_bytes():
    # Re-serialising the JSON (as Chapa's docs example does) changes the bytes, and the HMAC.
    body = raw("chapa", "charge.success")
    assert hmac_hex(SECRET.encode(), body) != hmac_hex(SECRET.encode(), dumps(load("chapa", "charge.success")))


def test_the_constant_chapa_signature_is_not_stored(client, account):
    """chapa-signature is an HMAC of the secret alone, as good as the secret wherever it is
    accepted: it is dropped; x-chapa-signature covers the body and is kept."""
    delivery = signed()
    assert answer(post(client, "chapa", delivery)) == accepted(f"charge.success:{REF}")
    headers = {name.lower(): value for name, value in WebhookEvent.objects.get().headers.items()}
    assert "chapa-signature" not in headers
    assert headers["x-chapa-signature"] == delivery.headers["x-chapa-signature"]
