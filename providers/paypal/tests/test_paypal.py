"""PayPal: deliveries verified through verify-webhook-signature (the fake checks the RSA signature
as PayPal does), Orders v2 checkout and capture, decimal-string amounts, refunds, the sandbox."""

import json

import pytest

from core.status import PaymentStatus as S
from payments.models import WebhookEvent
from providers.base import RefundResult, ReturnUrls
from providers.errors import ProviderRejected
from providers.paypal.fake import FakePayPal
from providers.paypal.wire import paypal_delivery
from providers.registry import get_provider
from providers.wire import Delivery, dumps
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory
from tests.providers.helpers import accepted, answer, duplicate, fake_server, ignored, load, post, raw, refused

pytestmark = pytest.mark.django_db

WEBHOOK_ID = "1JE4291016473214C"
CLIENT_ID, CLIENT_SECRET = "AschoolClientId", "EschoolClientSecret"
REF = "INV-2025-0042-a1"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="paypal", webhook_secret=WEBHOOK_ID, api_key=CLIENT_SECRET,
                          credentials={"client_id": CLIENT_ID}, test_mode=True)  # fmt: skip


@pytest.fixture
def fake(settings):
    fake = FakePayPal(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    fake.webhook_ids = {WEBHOOK_ID}
    with fake_server(fake, settings, "PAYPAL_SANDBOX_API_BASE_URL") as served:
        settings.PAYPAL_API_BASE_URL = "http://127.0.0.1:9"  # live must not be used by a test-mode account
        yield served


@pytest.fixture
def started(account, fake):
    payment = PaymentFactory(account=account, external_txn_id=None, reference=REF, amount_minor=10_000, currency="USD")
    result = get_provider("paypal").create_checkout(payment=payment, return_urls=URLS)
    payment.provider_checkout_id = result.checkout_id
    payment.save(update_fields=["provider_checkout_id"])
    return payment


def signed(name: str, **changes) -> Delivery:
    payload = load("paypal", name)
    payload["resource"].update(changes)
    return paypal_delivery(dumps(payload), WEBHOOK_ID)


def test_a_capture_is_verified_by_paypal_and_recorded_in_minor_units(client, account, fake, fake_directory):
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    assert answer(post(client, "paypal", delivery)) == accepted("WH-2CL46544TB770421K-5VB92446WP7345818")
    token, verify = fake.requests
    assert (token.path, verify.path) == ("/v1/oauth2/token", "/v1/notifications/verify-webhook-signature")
    sent = verify.json()
    assert sent["webhook_id"] == WEBHOOK_ID and sent["auth_algo"] == "SHA256withRSA"
    assert sent["transmission_sig"] == delivery.headers["paypal-transmission-sig"]
    assert sent["webhook_event"] == json.loads(delivery.body)
    process_pending()
    event = WebhookEvent.objects.get()
    payment = event.payment
    assert (event.status, payment.status, payment.amount_minor, payment.currency) == ("processed", S.SUCCEEDED, 10_000, "USD")
    assert (payment.external_txn_id, payment.reference or payment.provider_reference) == ("29Y24445UY2083144", REF)


def test_the_token_is_reused_and_a_redelivery_is_a_duplicate(client, account, fake):
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    post(client, "paypal", delivery)
    again = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    assert answer(post(client, "paypal", again)) == duplicate("WH-2CL46544TB770421K-5VB92446WP7345818")
    assert [r.path for r in fake.requests].count("/v1/oauth2/token") == 1


def test_a_tampered_body_is_refused_by_paypal(client, account, fake):
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    tampered = Delivery(delivery.body.replace(b'"100.00"', b'"900.00"'), delivery.headers)
    assert answer(post(client, "paypal", tampered)) == refused(
        "signature_invalid", "PayPal did not verify paypal-transmission-sig for this webhook")
    assert not WebhookEvent.objects.exists()


def test_another_webhooks_delivery_is_refused(client, account, fake):
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), "9XL90610J3647323C")
    assert post(client, "paypal", delivery).status_code == 401
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(("change", "expected"), [
    ({"paypal-transmission-sig": ""}, refused("signature_missing", "Missing paypal-transmission-sig header")),
    ({"paypal-auth-algo": "SHA1withRSA"}, refused("signature_invalid", "paypal-auth-algo must be SHA256withRSA")),
    ({"paypal-cert-url": "https://evil.example/cert.pem"}, refused("signature_invalid", "paypal-cert-url is not on PayPal's host")),
    ({"paypal-cert-url": "http://api.paypal.com/v1/notifications/certs/CERT-1"}, refused("signature_invalid", "paypal-cert-url is not on PayPal's host")),
])  # fmt: skip
def test_headers_that_cannot_be_paypals_are_refused_without_calling_out(client, account, fake, change, expected):
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    headers = {k: v for k, v in {**delivery.headers, **change}.items() if v}
    assert answer(post(client, "paypal", Delivery(delivery.body, headers))) == expected
    assert fake.requests == [] and not WebhookEvent.objects.exists()


def test_junk_is_refused_as_unsigned_and_not_kept(client, account, fake):
    delivery = paypal_delivery(b"not json", WEBHOOK_ID)
    assert answer(post(client, "paypal", delivery)) == refused("signature_invalid", "The body is not a PayPal event")
    assert not WebhookEvent.objects.exists()


def test_paypal_unreachable_refuses_so_paypal_retries(client, account, settings):
    settings.PAYPAL_SANDBOX_API_BASE_URL = "http://127.0.0.1:9"
    delivery = paypal_delivery(raw("paypal", "PAYMENT.CAPTURE.COMPLETED"), WEBHOOK_ID)
    status, body = answer(post(client, "paypal", delivery))
    assert (status, body["code"]) == (401, "signature_invalid")
    assert body["detail"].startswith("PayPal could not verify the delivery now (PayPal unreachable")
    assert not WebhookEvent.objects.exists()


def test_a_wrong_amount_is_a_dead_letter_naming_the_field(client, account, fake):
    response = post(client, "paypal", signed("PAYMENT.CAPTURE.COMPLETED", amount={"currency_code": "USD", "value": "10.001"}))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "resource.amount.value"


def test_checkout_creates_an_order_and_sends_the_payer_to_approve_it(account, fake, started):
    token, create = fake.requests
    assert create.path == "/v2/checkout/orders" and create.headers["Paypal-Request-Id"] == f"order-{started.pk}"
    assert create.json()["purchase_units"] == [{"reference_id": str(started.pk), "custom_id": REF,
                                                "description": f"{started.school.name} fees",
                                                "amount": {"currency_code": "USD", "value": "100.00"}}]  # fmt: skip
    assert create.json()["payment_source"]["paypal"]["experience_context"]["return_url"] == URLS.success_url
    assert started.provider_checkout_id in fake.orders


def test_an_approval_is_captured_by_the_worker_once(client, account, fake, started, fake_directory):
    fake.approve(started.provider_checkout_id)
    approved = signed("CHECKOUT.ORDER.APPROVED", id=started.provider_checkout_id)
    assert post(client, "paypal", approved).status_code == 202
    process_pending()
    started.refresh_from_db()
    assert (started.status, started.amount_minor) == (S.SUCCEEDED, 10_000)
    capture_id = next(iter(fake.captures))
    assert started.external_txn_id == capture_id
    captures = [r for r in fake.requests if r.path.endswith("/capture")]
    assert len(captures) == 1 and captures[0].headers["Paypal-Request-Id"] == f"capture-{started.pk}"
    # Asked again (the janitor): the completed order is read, not captured a second time.
    assert get_provider("paypal").fetch_status(payment=started).status == S.SUCCEEDED
    assert len([r for r in fake.requests if r.path.endswith("/capture")]) == 1


def test_a_declined_capture_fails_the_payment(client, account, fake, started, fake_directory):
    fake.approve(started.provider_checkout_id)
    fake.decline_next_capture = True
    post(client, "paypal", signed("CHECKOUT.ORDER.APPROVED", id=started.provider_checkout_id))
    process_pending()
    started.refresh_from_db()
    assert started.status == S.FAILED


def test_an_order_not_yet_approved_stays_pending(account, fake, started):
    assert get_provider("paypal").fetch_status(payment=started).status == S.PENDING


def test_a_refund_of_the_capture(client, account, fake, started, fake_directory):
    fake.approve(started.provider_checkout_id)
    adapter = get_provider("paypal")
    adapter.fetch_status(payment=started)
    started.external_txn_id = next(iter(fake.captures))
    refund = adapter.refund(payment=started, amount_minor=4_000, idempotency_key="refund-1", reason="Overpaid")
    request = fake.requests[-1]
    assert (request.path, request.json()) == (f"/v2/payments/captures/{started.external_txn_id}/refund",
                                              {"amount": {"value": "40.00", "currency_code": "USD"}, "note_to_payer": "Overpaid"})  # fmt: skip
    assert request.headers["Paypal-Request-Id"] == "refund-1"
    assert refund == RefundResult(refund.refund_id, "succeeded", 4_000, "COMPLETED")
    assert adapter.refund_status(payment=started, refund_id=refund.refund_id) == refund
    # The same request id is the same refund, as PayPal documents.
    assert adapter.refund(payment=started, amount_minor=4_000, idempotency_key="refund-1") == refund
    with pytest.raises(ProviderRejected, match="HTTP 422"):  # REFUND_AMOUNT_EXCEEDED: 60.00 is left
        adapter.refund(payment=started, amount_minor=6_001, idempotency_key="refund-2")
    assert len(fake.refunds) == 1


def test_a_refund_event_names_its_capture_through_the_up_link(account):
    event = get_provider("paypal").parse(payload=load("paypal", "PAYMENT.CAPTURE.REFUNDED"), headers={}, account=account)
    assert (event.external_txn_id, event.refunds[0].key, event.refunds[0].amount_minor) == (
        "29Y24445UY2083144", "1JU08902781691411", 4_000)


def test_an_event_we_do_not_act_on_is_answered_ignored(client, account, fake):
    payload = {"id": "WH-IGNORED-1", "event_type": "BILLING.PLAN.CREATED", "resource": {"id": "P-1"}}
    delivery = paypal_delivery(dumps(payload), WEBHOOK_ID)
    assert answer(post(client, "paypal", delivery)) == ignored(
        "WH-IGNORED-1", "BILLING.PLAN.CREATED is not about a capture, a refund or a dispute")


@pytest.mark.parametrize(("minor", "currency", "value"), [(10_000, "USD", "100.00"), (1_500, "JPY", "1500"), (5, "USD", "0.05")])
def test_amounts_go_out_as_exact_decimal_strings(account, fake, minor, currency, value):
    payment = PaymentFactory(account=account, external_txn_id=None, reference=f"R-{minor}", amount_minor=minor, currency=currency)
    get_provider("paypal").create_checkout(payment=payment, return_urls=URLS)
    assert fake.requests[-1].json()["purchase_units"][0]["amount"] == {"currency_code": currency, "value": value}


def test_the_fake_refuses_an_amount_with_too_many_decimals(account, fake):
    adapter = get_provider("paypal")
    with pytest.raises(ProviderRejected, match="HTTP 422"):
        adapter._call(account, "POST", "/v2/checkout/orders",
                      json={"intent": "CAPTURE", "purchase_units": [{"amount": {"currency_code": "USD", "value": "1.005"}}]})


def test_a_live_account_uses_the_live_host(account, settings, fake):
    account.test_mode = False
    assert get_provider("paypal").api_base_url(account) == "http://127.0.0.1:9"
