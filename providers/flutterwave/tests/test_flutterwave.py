"""Flutterwave: verif-hash (no body binding, so everything is confirmed by the verify API), both
payload shapes, major-unit amounts, refunds confirmed by the refunds API."""

import pytest

from core.status import PaymentStatus as S
from payments.models import WebhookEvent
from providers.base import NormalizedStatus, RefundResult, ReturnUrls
from providers.errors import PayloadInvalid
from providers.flutterwave.fake import FakeFlutterwave
from providers.flutterwave.wire import flutterwave_delivery
from providers.registry import get_provider
from providers.wire import dumps
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory, report
from tests.providers.helpers import accepted, answer, dead_letter, duplicate, fake_server, load, post, raw, refused

pytestmark = pytest.mark.django_db

SECRET = "flw-secret-hash-1"
KEY = "FLWSECK_TEST-school0123-X"
REF = "INV-2025-0042-a1"
TXN = 285959875
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="flutterwave", webhook_secret=SECRET, api_key=KEY, test_mode=True)


@pytest.fixture
def fake(settings):
    with fake_server(FakeFlutterwave(secret_key=KEY), settings, "FLUTTERWAVE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def started(account, fake):
    payment = PaymentFactory(account=account, external_txn_id=None, reference=REF, amount_minor=2_500_000, currency="NGN",
                             payer={"email": "parent@example.com", "name": "Ada Obi"})
    get_provider("flutterwave").create_checkout(payment=payment, return_urls=URLS)
    return payment


def signed(name="charge.completed", secret=SECRET):
    return flutterwave_delivery(raw("flutterwave", name), secret)


def test_recorded_success_is_accepted_normalized_and_confirmed(client, account, started, fake, fake_directory):
    delivery = signed()
    assert answer(post(client, "flutterwave", delivery)) == accepted(f"charge:{TXN}:successful")
    event = get_provider("flutterwave").verify_and_parse(body=delivery.body, headers=delivery.headers, account=account)
    assert event.as_json() == {
        "event_id": f"charge:{TXN}:successful", "event_type": "charge.completed", "status": "succeeded",
        "external_txn_id": str(TXN), "amount_minor": 2_500_000, "currency": "NGN", "reference": REF, "checkout_id": "",
        "provider_student_id": "prov-001", "payer": {"email": "parent@example.com", "name": "Ada Obi"},
        "refunded_total_minor": None, "refunds": (), "disputes": (), "occurred_at": None, "charge_id": "", "ignored_reason": "", "requires_confirmation": True,
    }
    fake.settle(REF, "successful", transaction_id=TXN)
    process_pending()
    verify, refunds = fake.requests[-2:]
    assert (verify.path, refunds.path, refunds.query) == (f"/v3/transactions/{TXN}/verify", "/v3/refunds", {"id": [str(TXN)]})
    started.refresh_from_db()
    assert (started.status, started.amount_minor, started.external_txn_id) == (S.SUCCEEDED, 2_500_000, str(TXN))


def test_a_forged_success_is_not_believed(client, account, started, fake, fake_directory):
    post(client, "flutterwave", signed())
    fake.settle(REF, "failed", transaction_id=TXN)
    process_pending()
    started.refresh_from_db()
    assert started.status == S.FAILED


def test_the_flat_v2_shape_is_understood(account):
    event = get_provider("flutterwave").parse(payload=load("flutterwave", "charge.completed.flat_v2"), headers={}, account=account)
    assert (event.event_id, event.reference, event.amount_minor, event.status, event.payer) == (
        f"charge:{TXN}:successful", REF, 2_500_050, S.SUCCEEDED, {"email": "parent@example.com", "name": "Ada Obi"})


@pytest.mark.parametrize(("header", "expected"), [
    ("wrong-hash", refused("signature_invalid", "verif-hash does not match the secret hash")),
    ("", refused("signature_missing", "Missing verif-hash (v3) or flutterwave-signature (v4) header")),
])
def test_a_wrong_or_missing_hash_is_refused(client, account, header, expected):
    delivery = flutterwave_delivery(raw("flutterwave", "charge.completed"), header)
    if not header:
        delivery = delivery.__class__(delivery.body, {})
    assert answer(post(client, "flutterwave", delivery)) == expected
    assert not WebhookEvent.objects.exists()


def test_a_tampered_body_passes_the_hash_but_not_the_confirmation(client, account, started, fake, fake_directory):
    # verif-hash does not cover the body: a changed amount gets in, and the API's amount wins.
    delivery = signed()
    tampered = delivery.__class__(delivery.body.replace(b'"amount": 25000', b'"amount": 99000'), delivery.headers)
    assert post(client, "flutterwave", tampered).status_code == 202
    fake.settle(REF, "successful", transaction_id=TXN)
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.amount_minor) == (S.SUCCEEDED, 2_500_000)


def test_a_redelivery_is_a_duplicate(client, account):
    post(client, "flutterwave", signed())
    assert answer(post(client, "flutterwave", signed())) == duplicate(f"charge:{TXN}:successful")


def test_a_missing_field_is_a_dead_letter(client, account):
    payload = load("flutterwave", "charge.completed")
    del payload["data"]["tx_ref"]
    response = post(client, "flutterwave", flutterwave_delivery(dumps(payload), SECRET))
    assert answer(response) == (400, {"detail": "Invalid webhook payload", "code": "invalid_payload",
                                      "errors": [{"field": "data.tx_ref", "message": "Field required"}]})
    assert dead_letter().event_type == "charge.completed"


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    (25000, "NGN", 2_500_000), ("25000.50", "NGN", 2_500_050), (100000, "UGX", 100_000), ("1,000", "KES", 100_000)])
def test_major_units_to_minor_units(account, amount, currency, minor):
    payload = load("flutterwave", "charge.completed")
    payload["data"].update(amount=amount, currency=currency)
    assert get_provider("flutterwave").parse(payload=payload, headers={}, account=account).amount_minor == minor


def test_a_fractional_ugx_amount_is_a_field_error(account):
    payload = load("flutterwave", "charge.completed")
    payload["data"].update(amount="100.5", currency="UGX")
    with pytest.raises(PayloadInvalid) as caught:
        get_provider("flutterwave").parse(payload=payload, headers={}, account=account)
    assert caught.value.errors == [{"field": "data.amount", "message": "amount '100.5' has decimals but UGX has no minor unit"}]


def test_a_refund_is_taken_from_the_refunds_api(client, account, started, fake, fake_directory):
    fake.settle(REF, "successful", transaction_id=TXN)
    report(started, status=S.SUCCEEDED, external_txn_id=str(TXN))
    refund = get_provider("flutterwave").refund(payment=started, amount_minor=1_000_000, idempotency_key="refund-1", reason="Overpaid")
    request = fake.requests[-1]
    assert (request.path, request.json()) == (f"/v3/transactions/{TXN}/refund", {"amount": "10000.00", "comments": "Overpaid"})
    assert request.headers["X-Idempotency-Key"] == "refund-1"
    assert refund == RefundResult(str(fake.refunds[0]["id"]), "succeeded", 1_000_000, "completed")
    assert answer(post(client, "flutterwave", signed("refund"))) == accepted(f"refund:{TXN}:URF_1577867664541_3572735")
    assert process_pending() == [
        "no change; confirmed: succeeded -> partially_refunded; refunded 1000000 of 2500000; student pending"]
    started.refresh_from_db()
    assert (started.status, started.refunded_amount_minor) == (S.PARTIALLY_REFUNDED, 1_000_000)


def test_checkout_and_verify_by_reference_requests(account, fake, started):
    request = fake.requests[0]
    assert (request.method, request.path, request.headers["Authorization"]) == ("POST", "/v3/payments", f"Bearer {KEY}")
    assert request.json() == {
        "tx_ref": REF, "amount": "25000.00", "currency": "NGN", "redirect_url": URLS.success_url,
        "customer": {"email": "parent@example.com", "name": "Ada Obi"},
        "customizations": {"title": "Nile Gardens School fees"},
        "meta": {"payment_id": str(started.pk), "student_id": ""},
    }
    fake.settle(REF, "successful", transaction_id=TXN)
    status = get_provider("flutterwave").fetch_status(payment=started)
    assert fake.requests[-2].path == "/v3/transactions/verify_by_reference" and fake.requests[-2].query == {"tx_ref": [REF]}
    assert status == NormalizedStatus(S.SUCCEEDED, str(TXN), 2_500_000, "NGN", detail="Pending")


def test_the_secret_hash_in_verif_hash_is_never_stored(client, account):
    """verif-hash is the secret itself, not a signature: neither an event nor a dead letter keeps it."""
    assert answer(post(client, "flutterwave", signed()))[0] == 202
    assert post(client, "flutterwave", flutterwave_delivery(b'{"data": {}}', SECRET)).status_code == 400
    for event in WebhookEvent.objects.all():
        assert "verif-hash" not in {name.lower() for name in event.headers}
        assert SECRET not in str(event.headers)


def test_the_migration_scrubs_secret_hashes_stored_before(account):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("payments.migrations.0004_webhook_event_superseded_secret_headers")
    event = WebhookEvent.objects.create(
        account=account, external_event_id="old", headers={"Verif-Hash": SECRET, "Content-Type": "application/json"}
    )
    migration.scrub_secret_headers(apps, None)
    event.refresh_from_db()
    assert event.headers == {"Content-Type": "application/json"}
