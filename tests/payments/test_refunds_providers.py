"""Staff refunds end to end, against each provider's fake API over a real socket (the real stripe
SDK and httpx) and the fake QuickBooks: the refund is recorded, sent with its idempotency key,
pending until the provider confirms it (its documented refund webhook, posted signed through the
real endpoint, or its API asked again), then counted once, and booked once as a RefundReceipt.
Also: what each fake refuses, answers that are lost (sent again only where the provider honours
the key), and Paystack's and Chapa's refund webhooks, which carry no refund id."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.status import PaymentStatus as S
from payments import services
from payments.api_tokens import api_token_create
from payments.ledger import FactKind, FactSource
from payments.models import AuditLog, MappingStatus, RefundRequest, TransactionFact, WebhookEvent
from payments.selectors import payment_refund_balance
from providers.base import ReturnUrls
from providers.chapa.fake import FakeChapa
from providers.chapa.wire import chapa_delivery
from providers.flutterwave.fake import FakeFlutterwave
from providers.flutterwave.wire import flutterwave_delivery
from providers.omise.fake import FakeOmise
from providers.omise.wire import omise_delivery
from providers.paystack.fake import FakePaystack
from providers.paystack.wire import paystack_delivery
from providers.registry import get_provider
from providers.stripe.fake import FakeStripe, decode_form
from providers.stripe.wire import stripe_delivery
from providers.wire import dumps
from quickbooks_sync import services as books_services
from quickbooks_sync.models import QboConnection
from tests.conftest import free_port, process_pending
from tests.factories import AccountFactory, PaymentFactory, report
from tests.payments.conftest import csrf_token
from tests.payments.test_refunds import body_of
from tests.providers.helpers import fake_server, load, post
from tests.quickbooks_sync.conftest import fake_qbo  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=staff)}")
    return client


@pytest.fixture
def books(school, fake_qbo):  # noqa: F811 - the fixture imported above
    """Connect the school to a QuickBooks company (the fake) in ``currency``; returns a function
    that syncs a payment and lists the company's RefundReceipts' amounts."""
    realm = "9130350000000001"
    state = {}

    def connect(currency: str):
        fake_qbo.add_company(realm, name="Refund books", home_currency=currency)
        access, refresh = fake_qbo.issue_tokens(realm)
        now = timezone.now()
        QboConnection.objects.create(
            school=school, realm_id=realm, company_name="Refund books", status=QboConnection.Status.CONNECTED,
            access_token=access, access_token_expires_at=now + timedelta(hours=1), refresh_token=refresh,
            refresh_token_expires_at=now + timedelta(days=100), tokens_refreshed_at=now, item_id="1",
            item_name="School fees", deposit_account_id="35", deposit_account_name="Checking", home_currency=currency,
            sync_since=now - timedelta(days=1),
        )  # fmt: skip
        state["connected"] = True

    def refund_receipts(payment) -> list:
        books_services.qbo_sync_request(payment_id=payment.pk)
        books_services.qbo_school_sync(school_id=payment.school_id)
        return [receipt["TotalAmt"] for receipt in fake_qbo.objects(realm, "RefundReceipt")]

    connect.refund_receipts = refund_receipts
    return connect


def refund(api, payment, amount: str, reason: str = "Withdrawn from the school", **headers):
    return api.post(f"/api/payments/{payment.pk}/refunds", {"amount": amount, "reason": reason}, format="json", **headers)


def refund_facts(payment) -> list[tuple]:
    return list(
        TransactionFact.objects.filter(payment=payment, kind=FactKind.REFUND)
        .order_by("id")
        .values_list("key", "status", "amount_minor", "source", "source_ref")
    )


def amounts(payment) -> tuple:
    payment.refresh_from_db()
    return payment.status, payment.refunded_amount_minor, payment.refund_pending_amount_minor


def webhook_refund_key(payment) -> str:
    """The key the provider's refund webhook was recorded under (Paystack's and Chapa's name no
    refund id: it is whatever their adapter keys such a report by)."""
    return TransactionFact.objects.get(payment=payment, kind=FactKind.REFUND, source=FactSource.PROVIDER_EVENT).key


def mapped(payment, student) -> None:
    payment.student, payment.mapping_status = student, MappingStatus.MAPPED
    payment.save(update_fields=["student", "mapping_status"])


# --- Stripe: Idempotency-Key honoured; refunds named re_... everywhere ----------------------------

STRIPE_KEY = "sk_test_refunds01"


@pytest.fixture
def stripe(settings):
    with fake_server(FakeStripe(api_key=STRIPE_KEY), settings, "STRIPE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def stripe_paid(school, student, stripe):
    """UGX 450,000 paid through a Stripe Checkout Session (the fake completes it)."""
    account = AccountFactory(school=school, provider="stripe", webhook_secret="whsec_refunds", api_key=STRIPE_KEY, test_mode=True)
    payment = PaymentFactory(account=account, external_txn_id=None, reference="PSTRIPE0001", amount_minor=450_000, currency="UGX")
    payment.provider_checkout_id = get_provider("stripe").create_checkout(payment=payment, return_urls=URLS).checkout_id
    payment.save()
    intent = stripe.complete(payment.provider_checkout_id)["payment_intent"]
    report(payment, status=S.SUCCEEDED, external_txn_id=intent)
    mapped(payment, student)
    return payment


@pytest.fixture
def short_stripe_timeout(monkeypatch):
    import providers.stripe.adapter as stripe_module

    monkeypatch.setattr(stripe_module.StripeProvider, "api_timeout_seconds", 0.5)
    monkeypatch.setattr(stripe_module, "_http_client", None)
    yield
    stripe_module._http_client = None


def test_a_pending_stripe_refund_counts_once_stripe_confirms_it_and_is_booked_once(
    api, client, stripe, stripe_paid, books, django_capture_on_commit_callbacks
):
    books("UGX")
    assert books.refund_receipts(stripe_paid) == []
    stripe.refund_status = "pending"  # e.g. a bank debit: Stripe confirms it later
    response = refund(api, stripe_paid, "150,000", "Left after the first week")
    request = RefundRequest.objects.get()
    sent = stripe.requests[-1]
    assert (sent.method, sent.path, sent.headers["Idempotency-Key"]) == ("POST", "/v1/refunds", request.idempotency_key)
    assert decode_form(sent.body) == {
        "payment_intent": stripe_paid.external_txn_id, "amount": "150000",
        "metadata": {"reference": "PSTRIPE0001", "refund_request": request.idempotency_key, "reason": "Left after the first week"},
    }  # fmt: skip
    refund_id = next(iter(stripe.refunds))
    assert (response.status_code, response.json()) == (201, body_of(request))
    assert (request.status, request.provider_refund_id, request.amount_display) == ("submitted", refund_id, "UGX 150,000")
    assert amounts(stripe_paid) == (S.SUCCEEDED, 0, 150_000)
    assert refund_facts(stripe_paid) == [(refund_id, "pending", 150_000, FactSource.PROVIDER_API, f"refund answer {request.pk}")]
    assert books.refund_receipts(stripe_paid) == []  # nothing moved yet

    # Stripe settles it; the next scheduled check asks Stripe (GET /v1/refunds/<id>).
    stripe.settle_refund(refund_id, "succeeded")
    request.refresh_from_db()
    assert request.next_check_at is not None
    with django_capture_on_commit_callbacks():
        assert services.refund_requests_recheck_due(now=request.next_check_at) == [request.pk]
    assert services.refund_request_recheck(refund_request_id=request.pk) == "provider says succeeded; refund succeeded"
    assert stripe.requests[-1].path == f"/v1/refunds/{refund_id}"
    assert amounts(stripe_paid) == (S.PARTIALLY_REFUNDED, 150_000, 0)
    request.refresh_from_db()
    assert (request.status, request.ledger_key, request.next_check_at) == ("succeeded", refund_id, None)
    assert books.refund_receipts(stripe_paid) == [150_000]

    # Stripe's own charge.refunded (its cumulative amount_refunded) says nothing new.
    payload = load("stripe", "charge.refunded")
    payload["data"]["object"].update(amount=450_000, amount_refunded=150_000, currency="ugx", payment_intent=stripe_paid.external_txn_id)
    assert post(client, "stripe", stripe_delivery(json.dumps(payload, default=str).encode(), ["whsec_refunds"])).status_code == 202
    process_pending()
    assert amounts(stripe_paid) == (S.PARTIALLY_REFUNDED, 150_000, 0)
    assert books.refund_receipts(stripe_paid) == [150_000]


def test_a_stripe_card_refund_succeeds_at_once_and_the_rest_is_refused_by_us_first(api, stripe, stripe_paid, books):
    books("UGX")
    response = refund(api, stripe_paid, "450,000")
    assert (response.status_code, response.json()["status"]) == (201, "succeeded")
    assert amounts(stripe_paid) == (S.REFUNDED, 450_000, 0)
    assert books.refund_receipts(stripe_paid) == [450_000]
    calls = len(stripe.requests)
    assert refund(api, stripe_paid, "1").json() == {
        "detail": "At most UGX 0 can be refunded (UGX 450,000 received, UGX 450,000 refunded).",
        "code": "refund_exceeds_balance",
    }
    assert len(stripe.requests) == calls  # refused here, Stripe never asked


def test_stripe_refuses_more_than_is_left_there_and_nothing_is_counted(api, stripe, stripe_paid):
    # A refund made in Stripe's dashboard that no webhook has told us about yet.
    stripe.intents[stripe_paid.external_txn_id]["latest_charge"]["amount_refunded"] = 400_000
    response = refund(api, stripe_paid, "100,000")
    request = RefundRequest.objects.get()
    assert response.status_code == 502
    assert response.json() == {
        "detail": "Stripe refused the refund: Stripe refused the request (HTTP 400): "
        "Refund amount (100000) is greater than unrefunded amount on charge (50000)",
        "code": "provider_refused",
        "refund": response.json()["refund"] | {"status": "failed", "provider_refund_id": ""},
    }
    assert (request.status, request.provider_refund_id, request.finished_at is not None) == ("failed", "", True)
    assert refund_facts(stripe_paid) == []
    assert amounts(stripe_paid) == (S.SUCCEEDED, 0, 0)
    # Nothing is held back by a refused refund.
    assert payment_refund_balance(payment=stripe_paid).left_minor == 450_000


def test_a_stripe_refund_whose_answer_was_lost_is_sent_again_with_the_same_key_and_made_once(
    api, stripe, stripe_paid, books, short_stripe_timeout
):
    books("UGX")
    stripe.stall_seconds, stripe.stall_next = 1.5, 2  # the SDK's own retry times out too
    response = refund(api, stripe_paid, "200,000")
    request = RefundRequest.objects.get()
    assert (response.status_code, response.json()) == (202, body_of(request))
    assert (request.status, request.error) == ("in_doubt", "Stripe unavailable: APIConnectionError")
    assert len(stripe.refunds) == 1  # Stripe did make it
    assert amounts(stripe_paid) == (S.SUCCEEDED, 0, 0)
    # Nothing else may be refunded beside a refund whose outcome is unknown.
    second = refund(api, stripe_paid, "1")
    assert (second.status_code, second.json()) == (409, {
        "detail": "Another refund of this payment is waiting for the provider's answer: its answer was lost, check it first.",
        "code": "refund_in_progress",
        "refund": body_of(request),
    })  # fmt: skip
    # Stripe honours the key: the scheduled check sends it again, and Stripe answers the first refund.
    request.refresh_from_db()
    assert request.next_check_at is not None
    assert services.refund_requests_recheck_due(now=request.next_check_at) == [request.pk]
    assert services.refund_request_recheck(refund_request_id=request.pk) == "sent again: succeeded"
    posts = [r for r in stripe.requests if r.path == "/v1/refunds"]
    assert {r.headers["Idempotency-Key"] for r in posts} == {request.idempotency_key} and len(posts) == 3
    assert len(stripe.refunds) == 1
    request.refresh_from_db()
    assert (request.status, request.provider_refund_id) == ("succeeded", next(iter(stripe.refunds)))
    assert amounts(stripe_paid) == (S.PARTIALLY_REFUNDED, 200_000, 0)
    assert books.refund_receipts(stripe_paid) == [200_000]


def test_a_stripe_refund_that_fails_later_frees_the_amount(api, stripe, stripe_paid):
    stripe.refund_status = "pending"
    refund(api, stripe_paid, "100,000")
    request = RefundRequest.objects.get()
    stripe.settle_refund(request.provider_refund_id, "failed")
    assert services.refund_request_recheck(refund_request_id=request.pk) == "provider says failed; refund failed"
    assert amounts(stripe_paid) == (S.SUCCEEDED, 0, 0)
    assert refund(api, stripe_paid, "450,000").status_code == 201


# --- Paystack: no idempotency key, refund webhooks without the refund id -------------------------

PAYSTACK_KEY = "sk_test_refunds0paystack"


@pytest.fixture
def paystack(settings):
    with fake_server(FakePaystack(secret_key=PAYSTACK_KEY), settings, "PAYSTACK_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def paystack_paid(school, student, paystack):
    """NGN 25,000.00 paid through Paystack's hosted checkout."""
    account = AccountFactory(school=school, provider="paystack", webhook_secret=PAYSTACK_KEY, api_key=PAYSTACK_KEY, test_mode=True)
    payment = PaymentFactory(account=account, external_txn_id=None, reference="PPAYSTACK001", amount_minor=2_500_000,
                             currency="NGN", payer={"email": "parent@example.com"})  # fmt: skip
    get_provider("paystack").create_checkout(payment=payment, return_urls=URLS)
    txn = paystack.settle("PPAYSTACK001")
    report(payment, status=S.SUCCEEDED, external_txn_id=str(txn["id"]))
    mapped(payment, student)
    return payment


@pytest.fixture
def short_paystack_timeout(monkeypatch):
    from providers.paystack import PaystackProvider

    monkeypatch.setattr(PaystackProvider, "api_timeout_seconds", 0.5)


def deliver(client, provider: str, delivery) -> int:
    return post(client, provider, delivery).status_code


def test_a_paystack_refund_is_confirmed_by_its_webhook_counted_once_and_booked_once(api, client, paystack, paystack_paid, books):
    books("NGN")
    assert books.refund_receipts(paystack_paid) == []
    response = refund(api, paystack_paid, "10,000.00", "Overpaid")
    request = RefundRequest.objects.get()
    sent = paystack.requests[-1]
    assert (sent.path, sent.json()) == ("/refund", {"transaction": "PPAYSTACK001", "amount": 1_000_000, "currency": "NGN", "merchant_note": "Overpaid"})
    assert "Idempotency-Key" not in sent.headers  # Paystack documents none
    refund_id = str(max(paystack.refunds))
    assert (response.status_code, response.json()["status"], response.json()["provider_refund_id"]) == (201, "submitted", refund_id)
    assert amounts(paystack_paid) == (S.SUCCEEDED, 0, 1_000_000)
    assert request.next_check_at is None  # nothing to ask Paystack: its webhook confirms it

    webhook = paystack.process_refund(int(refund_id))
    assert "id" not in webhook["data"]  # as documented: no refund id in it
    assert deliver(client, "paystack", paystack_delivery(dumps(webhook), PAYSTACK_KEY)) == 202
    process_pending()
    webhook_key = webhook_refund_key(paystack_paid)
    event_id = WebhookEvent.objects.get().external_event_id
    request.refresh_from_db()
    assert (request.status, request.ledger_key, request.matched_keys) == ("succeeded", webhook_key, [webhook_key])
    assert refund_facts(paystack_paid) == [
        (refund_id, "pending", 1_000_000, FactSource.PROVIDER_API, f"refund answer {request.pk}"),
        (webhook_key, "succeeded", 1_000_000, FactSource.PROVIDER_EVENT, event_id),
        # Our key for the same refund is closed, so the money counts once, under the webhook's.
        (refund_id, "failed", 1_000_000, FactSource.SYSTEM, f"same refund as {webhook_key}"),
    ]
    assert amounts(paystack_paid) == (S.PARTIALLY_REFUNDED, 1_000_000, 0)
    assert books.refund_receipts(paystack_paid) == [Decimal("10000.00")]
    # Paystack delivers it again: a duplicate, nothing new anywhere.
    assert deliver(client, "paystack", paystack_delivery(dumps(webhook), PAYSTACK_KEY)) == 200
    process_pending()
    assert amounts(paystack_paid) == (S.PARTIALLY_REFUNDED, 1_000_000, 0)
    assert books.refund_receipts(paystack_paid) == [Decimal("10000.00")]


def test_two_paystack_refunds_of_the_same_amount_count_twice_whichever_webhook_comes_first(api, client, paystack, paystack_paid):
    first = refund(api, paystack_paid, "5,000.00").json()
    second = refund(api, paystack_paid, "5,000.00").json()
    later = paystack.process_refund(int(second["provider_refund_id"]))
    earlier = paystack.process_refund(int(first["provider_refund_id"]))
    for webhook in (later, earlier):
        assert deliver(client, "paystack", paystack_delivery(dumps(webhook), PAYSTACK_KEY)) == 202
        process_pending()
    assert amounts(paystack_paid) == (S.PARTIALLY_REFUNDED, 1_000_000, 0)
    assert sorted(RefundRequest.objects.values_list("status", flat=True)) == ["succeeded", "succeeded"]


def test_a_failed_paystack_refund_frees_the_amount(api, client, paystack, paystack_paid):
    refund(api, paystack_paid, "25,000.00")
    request = RefundRequest.objects.get()
    webhook = paystack.process_refund(int(request.provider_refund_id), "failed")
    assert deliver(client, "paystack", paystack_delivery(dumps(webhook), PAYSTACK_KEY)) == 202
    process_pending()
    request.refresh_from_db()
    assert (request.status, request.ledger_key) == ("failed", webhook_refund_key(paystack_paid))
    assert amounts(paystack_paid) == (S.SUCCEEDED, 0, 0)
    assert AuditLog.objects.filter(action="refund.failed", target_id=str(request.pk)).exists()
    assert refund(api, paystack_paid, "25,000.00").status_code == 201


def test_a_paystack_refund_whose_answer_was_lost_is_never_sent_again_by_itself(
    api, client, paystack, paystack_paid, short_paystack_timeout
):
    paystack.stall_seconds, paystack.stall_next = 1.5, 1
    response = refund(api, paystack_paid, "7,500.00")
    request = RefundRequest.objects.get()
    assert (response.status_code, response.json()["status"], response.json()["error"]) == (202, "in_doubt", "Paystack timed out")
    assert len(paystack.refunds) == 1  # Paystack made it
    assert request.next_check_at is None
    assert services.refund_requests_recheck_due(now=timezone.now() + timedelta(days=30)) == []
    assert refund(api, paystack_paid, "100.00").json()["code"] == "refund_in_progress"
    assert [r.path for r in paystack.requests].count("/refund") == 1
    # Paystack's webhook for it arrives: matched by amount, it settles the request.
    webhook = paystack.process_refund(max(paystack.refunds))
    assert deliver(client, "paystack", paystack_delivery(dumps(webhook), PAYSTACK_KEY)) == 202
    process_pending()
    request.refresh_from_db()
    assert (request.status, request.ledger_key) == ("succeeded", webhook_refund_key(paystack_paid))
    assert amounts(paystack_paid) == (S.PARTIALLY_REFUNDED, 750_000, 0)


def test_staff_release_a_lost_paystack_refund_after_checking_the_dashboard(client, api, staff, paystack, paystack_paid, settings):
    reachable = settings.PAYSTACK_API_BASE_URL
    settings.PAYSTACK_API_BASE_URL = f"http://127.0.0.1:{free_port()}"  # the connection fails: Paystack never got it
    response = refund(api, paystack_paid, "7,500.00")
    assert (response.status_code, response.json()["error"]) == (202, "Paystack unreachable: ConnectError")
    settings.PAYSTACK_API_BASE_URL = reachable
    request = RefundRequest.objects.get()
    client.force_login(staff)
    change = client.get(f"/admin/payments/refundrequest/{request.pk}/change/").content.decode()
    assert f'href="/admin/payments/refundrequest/{request.pk}/resolve/"' in change
    page = client.get(f"/admin/payments/refundrequest/{request.pk}/resolve/").content.decode()
    assert "Paystack documents no idempotency key for refunds: send it again only if the dashboard shows no such refund" in page
    response = client.post(
        f"/admin/payments/refundrequest/{request.pk}/resolve/",
        {"csrfmiddlewaretoken": csrf_token(page), "decision": "not_made", "note": "Not in the Paystack dashboard at 10:40"},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]] == ["Refund failed."]
    request.refresh_from_db()
    assert request.status == "failed"
    assert AuditLog.objects.get(action="refund.resolved").details == {
        "decision": "not_made", "note": "Not in the Paystack dashboard at 10:40"}
    assert refund(api, paystack_paid, "25,000.00").status_code == 201


def test_an_api_retry_with_the_same_key_does_not_ask_paystack_twice(api, paystack, paystack_paid):
    first = refund(api, paystack_paid, "1,000.00", HTTP_IDEMPOTENCY_KEY="retry-1")
    again = refund(api, paystack_paid, "1,000.00", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert (first.status_code, again.status_code, first.json() == again.json()) == (201, 200, True)
    assert [r.path for r in paystack.requests].count("/refund") == 1
    assert len(paystack.refunds) == 1


def test_paystack_refuses_an_unknown_transaction(api, school, paystack):
    account = AccountFactory(school=school, provider="paystack", webhook_secret=PAYSTACK_KEY, api_key=PAYSTACK_KEY, test_mode=True)
    elsewhere = PaymentFactory(account=account, external_txn_id="9999", reference=None, provider_reference="made-in-the-dashboard",
                               amount_minor=500_000, currency="NGN")  # fmt: skip
    report(elsewhere, status=S.SUCCEEDED)
    response = refund(api, elsewhere, "5,000.00")
    assert (response.status_code, response.json()["detail"]) == (
        502, "Paystack refused the refund: Paystack refused the request (HTTP 404): Transaction not found")
    assert paystack.requests[-1].json()["transaction"] == "made-in-the-dashboard"
    assert RefundRequest.objects.get().status == "failed"


# --- Flutterwave: the refund webhook is confirmed through the refunds API -------------------------

FLW_KEY = "FLWSECK_TEST-refunds0000-X"
FLW_HASH = "flw-refunds-secret-hash"
FLW_TXN = 285959875


@pytest.fixture
def flutterwave(settings):
    with fake_server(FakeFlutterwave(secret_key=FLW_KEY), settings, "FLUTTERWAVE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def flutterwave_paid(school, student, flutterwave):
    account = AccountFactory(school=school, provider="flutterwave", webhook_secret=FLW_HASH, api_key=FLW_KEY, test_mode=True)
    payment = PaymentFactory(account=account, external_txn_id=None, reference="PFLUTTER0001", amount_minor=2_500_000,
                             currency="NGN", payer={"email": "parent@example.com"})  # fmt: skip
    get_provider("flutterwave").create_checkout(payment=payment, return_urls=URLS)
    flutterwave.settle("PFLUTTER0001", "successful", transaction_id=FLW_TXN)
    report(payment, status=S.SUCCEEDED, external_txn_id=str(FLW_TXN))
    mapped(payment, student)
    return payment


def test_a_flutterwave_refund_is_confirmed_by_its_webhook_and_the_refunds_api(api, client, flutterwave, flutterwave_paid, books):
    books("NGN")
    flutterwave.refund_status = "pending"
    response = refund(api, flutterwave_paid, "12,500.00", "Half term only")
    request = RefundRequest.objects.get()
    sent = flutterwave.requests[-1]
    assert (sent.path, sent.json(), sent.headers["X-Idempotency-Key"]) == (
        f"/v3/transactions/{FLW_TXN}/refund", {"amount": "12500.00", "comments": "Half term only"}, request.idempotency_key)
    flw_refund = flutterwave.refunds[0]
    assert (response.status_code, response.json()["status"], request.provider_refund_id) == (201, "submitted", str(flw_refund["id"]))
    assert amounts(flutterwave_paid) == (S.SUCCEEDED, 0, 1_250_000)
    assert books.refund_receipts(flutterwave_paid) == []

    flutterwave.complete_refund(flw_refund["id"])
    notice = load("flutterwave", "refund")
    notice.update(id=flw_refund["id"], TransactionId=FLW_TXN, FlwRef=flw_refund["flw_ref"], AmountRefunded=12500)
    assert deliver(client, "flutterwave", flutterwave_delivery(dumps(notice), FLW_HASH)) == 202
    process_pending()  # the notice binds nothing: the worker asks GET /v3/refunds
    request.refresh_from_db()
    assert (request.status, request.ledger_key) == ("succeeded", str(flw_refund["id"]))
    assert amounts(flutterwave_paid) == (S.PARTIALLY_REFUNDED, 1_250_000, 0)
    assert books.refund_receipts(flutterwave_paid) == [Decimal("12500.00")]
    assert deliver(client, "flutterwave", flutterwave_delivery(dumps(notice), FLW_HASH)) == 200
    assert books.refund_receipts(flutterwave_paid) == [Decimal("12500.00")]


def test_flutterwave_refuses_more_than_is_left_there(api, flutterwave, flutterwave_paid):
    flutterwave.refunds.append({"id": 1, "tx_id": FLW_TXN, "amount_refunded": Decimal("20000"), "status": "completed"})
    response = refund(api, flutterwave_paid, "6,000.00")
    assert (response.status_code, response.json()["detail"]) == (
        502, "Flutterwave refused the refund: Flutterwave refused the request (HTTP 400): "
        "Refund amount cannot be greater than the transaction's unrefunded amount")


# --- Omise: a pending refund is confirmed by asking the API ---------------------------------------

OMISE_KEY = "skey_test_refunds0omise"
OMISE_SECRET = "b21pc2UtcmVmdW5kcy1zZWNyZXQ="


@pytest.fixture
def omise(settings):
    with fake_server(FakeOmise(secret_key=OMISE_KEY), settings, "OMISE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def omise_paid(school, student, omise):
    account = AccountFactory(school=school, provider="omise", webhook_secret=OMISE_SECRET, api_key=OMISE_KEY, test_mode=True)
    payment = PaymentFactory(account=account, external_txn_id=None, reference="POMISE000001", amount_minor=350_000, currency="THB")
    result = get_provider("omise").create_checkout(payment=payment, return_urls=URLS)
    payment.provider_checkout_id, payment.external_txn_id = result.checkout_id, result.external_txn_id
    payment.save()
    omise.settle(payment.external_txn_id, "successful")
    report(payment, status=S.SUCCEEDED)
    mapped(payment, student)
    return payment


def test_an_omise_refund_is_confirmed_by_its_api_and_its_webhook_adds_nothing(api, client, omise, omise_paid, books):
    books("THB")
    omise.refund_status = "pending"
    response = refund(api, omise_paid, "1,000.00", "Uniform returned")
    request = RefundRequest.objects.get()
    sent = omise.requests[-1]
    assert (sent.path, dict(parse_qsl(sent.body.decode())), sent.headers["Idempotency-Key"]) == (
        f"/charges/{omise_paid.external_txn_id}/refunds",
        {"amount": "100000", "metadata[refund_request]": request.idempotency_key, "metadata[reason]": "Uniform returned"},
        request.idempotency_key,
    )
    rfnd = request.provider_refund_id
    assert (response.status_code, response.json()["status"], rfnd.startswith("rfnd_test_")) == (201, "submitted", True)
    assert amounts(omise_paid) == (S.SUCCEEDED, 0, 100_000)

    omise.close_refund(rfnd)
    assert services.refund_request_recheck(refund_request_id=request.pk) == "provider says succeeded; refund succeeded"
    assert omise.requests[-1].path == f"/charges/{omise_paid.external_txn_id}/refunds/{rfnd}"
    assert amounts(omise_paid) == (S.PARTIALLY_REFUNDED, 100_000, 0)
    assert books.refund_receipts(omise_paid) == [Decimal("1000.00")]

    # Omise's refund.create for it, re-fetched through the charge: its refunded_amount agrees.
    payload = load("omise", "refund.create")
    payload["data"].update(id=rfnd, charge=omise_paid.external_txn_id, amount=100_000)
    assert deliver(client, "omise", omise_delivery(dumps(payload), [OMISE_SECRET])) == 202
    process_pending()
    assert amounts(omise_paid) == (S.PARTIALLY_REFUNDED, 100_000, 0)
    assert books.refund_receipts(omise_paid) == [Decimal("1000.00")]


def test_omise_refuses_an_unknown_charge(api, omise, omise_paid):
    omise.charges.clear()
    response = refund(api, omise_paid, "1.00")
    assert (response.status_code, response.json()["detail"]) == (
        502, "Omise refused the refund: Omise refused the request (HTTP 404): charge was not found")


# --- Chapa: the refund's reference is ours; its webhook carries no refund id ---------------------

CHAPA_KEY = "CHASECK_TEST-refunds0chapa"
CHAPA_SECRET = "chapa-refunds-secret"


def test_a_chapa_refund_is_confirmed_by_its_webhook(api, client, school, settings):
    with fake_server(FakeChapa(secret_key=CHAPA_KEY), settings, "CHAPA_API_BASE_URL") as chapa:
        account = AccountFactory(school=school, provider="chapa", webhook_secret=CHAPA_SECRET, api_key=CHAPA_KEY, test_mode=True)
        payment = PaymentFactory(account=account, external_txn_id=None, reference="PCHAPA000001", amount_minor=450_000,
                                 currency="ETB", payer={"email": "parent@example.com"})  # fmt: skip
        get_provider("chapa").create_checkout(payment=payment, return_urls=URLS)
        txn = chapa.settle("PCHAPA000001", "success")
        report(payment, status=S.SUCCEEDED, external_txn_id=txn["reference"])
        response = refund(api, payment, "1,500.00", "Trip cancelled")
        request = RefundRequest.objects.get()
        sent = chapa.requests[-1]
        assert (sent.path, dict(parse_qsl(sent.body.decode()))) == (
            f"/v1/refund/{txn['reference']}", {"amount": "1500.00", "reference": request.idempotency_key, "reason": "Trip cancelled"})
        assert (response.status_code, response.json()["status"], request.provider_refund_id) == (201, "submitted", request.idempotency_key)
        payload = load("chapa", "charge.refunded")
        payload.update(tx_ref="PCHAPA000001", reference=txn["reference"], amount="1500.00")
        assert deliver(client, "chapa", chapa_delivery(dumps(payload), CHAPA_SECRET)) == 202
        process_pending()
        request.refresh_from_db()
        assert (request.status, request.ledger_key) == ("succeeded", webhook_refund_key(payment))
        assert amounts(payment) == (S.PARTIALLY_REFUNDED, 150_000, 0)


# --- Each fake refuses what its API refuses --------------------------------------------------------


def test_each_fake_refuses_more_than_is_left_and_an_unknown_transaction(
    stripe_paid, paystack_paid, flutterwave_paid, omise_paid
):
    from copy import copy

    from providers.errors import ProviderRejected

    cases = [
        (stripe_paid, 450_001, "Stripe refused the request (HTTP 400): Refund amount (450001) is greater than unrefunded amount on charge (450000)",
         {"external_txn_id": "pi_unknown"}, "Stripe refused the request (HTTP 404): No such payment_intent: 'pi_unknown'"),
        (paystack_paid, 2_500_001, "Paystack refused the request (HTTP 400): Refund amount cannot be more than the unrefunded amount of the transaction",
         {"reference": "NOPE"}, "Paystack refused the request (HTTP 404): Transaction not found"),
        (flutterwave_paid, 2_500_001, "Flutterwave refused the request (HTTP 400): Refund amount cannot be greater than the transaction's unrefunded amount",
         {"external_txn_id": "1"}, "Flutterwave refused the request (HTTP 404): No transaction was found for this id"),
        (omise_paid, 350_001, "Omise refused the request (HTTP 400): amount exceeds the refundable amount of the charge",
         {"external_txn_id": "chrg_test_nope"}, "Omise refused the request (HTTP 404): charge was not found"),
    ]  # fmt: skip
    for payment, too_much, over_message, unknown, unknown_message in cases:
        adapter = get_provider(payment.provider)
        with pytest.raises(ProviderRejected) as over:
            adapter.refund(payment=payment, amount_minor=too_much, idempotency_key=f"over-{payment.provider}")
        assert over.value.detail == over_message
        stranger = copy(payment)
        for name, value in unknown.items():
            setattr(stranger, name, value)
        with pytest.raises(ProviderRejected) as missing:
            adapter.refund(payment=stranger, amount_minor=100, idempotency_key=f"unknown-{payment.provider}")
        assert missing.value.detail == unknown_message
