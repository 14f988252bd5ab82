"""The orders that once lost money, as plain tests: a partial reversal before its success (also
when the provider sent them in order and the broker reordered them), a refund the provider had
confirmed while our payment was still processing, and a refund of a payment we did not start.
Each is checked in the ledger and in the books."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone

from core.status import PaymentStatus as S
from payments import services
from payments.models import Payment, ReviewFlag, WebhookEvent
from providers.flutterwave.fake import FakeFlutterwave
from providers.flutterwave.wire import flutterwave_delivery, flutterwave_event
from providers.paystack.wire import paystack_delivery, paystack_event
from providers.wire import Params
from quickbooks_sync import services as books
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.ledger.conftest import STUDENT_ID, provider_account
from tests.ledger.test_any_order import documents_of, run_worker
from tests.providers.helpers import fake_server, post

pytestmark = pytest.mark.django_db


def sync(school) -> None:
    books.qbo_backlog_scan()
    books.qbo_school_sync(school_id=school.pk)


def surepay(client, school, **fields):
    body = surepay_body(provider_student_id=STUDENT_ID, **fields)
    response = post_webhook(client, body, school_code=school.code, signature=sign(body))
    assert response.status_code == 202
    return WebhookEvent.objects.get(account__school=school, external_event_id=fields["event_id"])


def test_a_partial_reversal_before_its_success_reduces_the_success(client, books, fake_qbo):
    ledger = books("ke", "KES")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    run_worker(surepay(client, ledger.school, event_id="r1", external_txn_id="t1", status="REVERSED",
                       amount="20,000", currency="KES").pk)  # fmt: skip
    assert not Payment.objects.filter(account=account).exists()  # it waits; no payment is made for it
    run_worker(surepay(client, ledger.school, event_id="s1", external_txn_id="t1", status="SUCCEEDED",
                       amount="60,000", currency="KES").pk)  # fmt: skip
    sync(ledger.school)
    payment = Payment.objects.get(account=account)
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor, payment.net_minor) == (
        S.PARTIALLY_REFUNDED, 6_000_000, 2_000_000, 4_000_000,
    )  # fmt: skip
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 2_000_000), ("SalesReceipt", 6_000_000)]


def test_in_order_but_reordered_by_a_broker_outage(client, books, fake_qbo):
    """Redis was down: SUCCEEDED was stored and answered 202 but not processed; REVERSED came
    after Redis was back and was processed at once; the sweep applied SUCCEEDED last."""
    ledger = books("ug", "UGX")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    stored = surepay(client, ledger.school, event_id="s1", external_txn_id="t2", status="SUCCEEDED", amount="1,200,000")
    run_worker(surepay(client, ledger.school, event_id="r1", external_txn_id="t2", status="REVERSED",
                       amount="300,000").pk)  # fmt: skip
    assert WebhookEvent.objects.get(pk=stored.pk).status == WebhookEvent.Status.PENDING
    with TestCase.captureOnCommitCallbacks(execute=True):
        process_pending()  # the sweep
    sync(ledger.school)
    payment = Payment.objects.get(account=account)
    assert (payment.status, payment.refunded_amount_minor, payment.net_minor) == (S.PARTIALLY_REFUNDED, 300_000, 900_000)
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 300_000), ("SalesReceipt", 1_200_000)]


@pytest.fixture
def flutterwave_api(settings):
    with fake_server(FakeFlutterwave(secret_key="FLWSECK_TEST-fake"), settings, "FLUTTERWAVE_API_BASE_URL") as fake:
        yield fake


def flutterwave_setup(books, flutterwave_api, txn: int, tx_ref: str, status: str):
    ledger = books("ng", "NGN")
    account = provider_account(ledger, "flutterwave", webhook_secret="flw-hash", api_key="FLWSECK_TEST-fake",
                               test_mode=True)  # fmt: skip
    flutterwave_api.transactions[tx_ref] = {
        "id": txn, "tx_ref": tx_ref, "flw_ref": "FLW-1", "amount": 25000, "currency": "NGN", "status": status,
        "processor_response": "Approved", "customer": {}, "meta": {"student_id": STUDENT_ID},
    }  # fmt: skip
    return ledger, account


def flutterwave_notice(client, ledger, kind: str, txn: int, tx_ref: str, **params):
    payload = flutterwave_event(kind, Params(amount_minor=2_500_000, currency="NGN", txn_id=str(txn), reference=tx_ref,
                                             student_id=STUDENT_ID, **params))  # fmt: skip
    response = post(client, "flutterwave", flutterwave_delivery(payload, "flw-hash"), school=ledger.school.code)
    assert response.status_code == 202
    return WebhookEvent.objects.get(account__school=ledger.school, external_event_id=response.json()["event_id"])


def test_a_refund_the_provider_confirmed_while_we_were_processing_is_applied(client, books, fake_qbo, flutterwave_api):
    ledger, account = flutterwave_setup(books, flutterwave_api, 4242, "tx-fw-1", "successful")
    flutterwave_api.refunds.append({"id": 77, "tx_id": 4242, "amount_refunded": 10000, "status": "completed"})
    run_worker(flutterwave_notice(client, ledger, "charge.completed", 4242, "tx-fw-1").pk)
    sync(ledger.school)
    payment = Payment.objects.get(account=account)
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor) == (
        S.PARTIALLY_REFUNDED, 2_500_000, 1_000_000,
    )  # fmt: skip
    assert payment.next_check_at is None
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 1_000_000), ("SalesReceipt", 2_500_000)]


def test_a_refund_notice_before_its_charge_leaves_nothing_stuck(client, books, fake_qbo, flutterwave_api):
    ledger, account = flutterwave_setup(books, flutterwave_api, 4343, "tx-fw-2", "pending")
    run_worker(flutterwave_notice(client, ledger, "charge.completed", 4343, "tx-fw-2").pk)
    payment = Payment.objects.get(account=account)
    # Created from a webhook and not settled: the janitor will look again.
    assert payment.status == S.PROCESSING and payment.next_check_at is not None
    flutterwave_api.transactions["tx-fw-2"]["status"] = "successful"
    flutterwave_api.refunds.append({"id": 78, "tx_id": 4343, "amount_refunded": 5000, "status": "completed"})
    run_worker(flutterwave_notice(client, ledger, "refund", 4343, "tx-fw-2", refunded_minor=500_000).pk)
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount_minor, payment.next_check_at) == (S.PARTIALLY_REFUNDED, 500_000, None)


def test_the_janitor_settles_a_payment_created_by_a_webhook(client, books, fake_qbo, flutterwave_api):
    ledger, account = flutterwave_setup(books, flutterwave_api, 4444, "tx-fw-3", "pending")
    run_worker(flutterwave_notice(client, ledger, "charge.completed", 4444, "tx-fw-3").pk)
    payment = Payment.objects.get(account=account)
    flutterwave_api.transactions["tx-fw-3"]["status"] = "successful"  # its notification is lost
    due = services.payments_recheck_due(now=payment.next_check_at)
    assert due == [payment.pk]
    services.payment_status_recheck(payment_id=payment.pk, now=payment.next_check_at)
    payment.refresh_from_db()
    assert (payment.status, payment.next_check_at) == (S.SUCCEEDED, None)


def test_a_provider_that_cannot_be_asked_ends_in_a_staff_flag(client, books, flutterwave_api, settings):
    ledger, account = flutterwave_setup(books, flutterwave_api, 4545, "tx-fw-4", "pending")
    run_worker(flutterwave_notice(client, ledger, "charge.completed", 4545, "tx-fw-4").pk)
    payment = Payment.objects.get(account=account)
    settings.FLUTTERWAVE_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens: unreachable
    now = timezone.now()
    for step in range(len(settings.PAYMENT_RECHECK_SCHEDULE_SECONDS)):
        now = max(now, payment.next_check_at) + timedelta(seconds=1)
        assert services.payments_recheck_due(now=now) == [payment.pk]
        services.payment_status_recheck(payment_id=payment.pk, now=now)
        payment.refresh_from_db()
    # Not expired (we do not know what happened), but flagged for staff and still asked.
    assert (payment.status, payment.review_flag) == (S.PROCESSING, ReviewFlag.STATUS_UNKNOWN)
    assert "could not be asked" in payment.review_flag_reason and payment.next_check_at is not None


def paystack(client, ledger, kind: str, **params):
    payload = paystack_event(kind, Params(currency="NGN", student_id=STUDENT_ID, **params))
    if kind.startswith("refund."):
        payload["data"]["amount"] = str(params["amount_minor"])
    response = post(client, "paystack", paystack_delivery(payload, "sk_test_ps"), school=ledger.school.code)
    assert response.status_code == 202
    return WebhookEvent.objects.get(account__school=ledger.school, external_event_id=response.json()["event_id"])


def test_a_refund_of_a_payment_we_did_not_start_reduces_that_payment(client, books, fake_qbo):
    ledger = books("ng", "NGN")
    account = provider_account(ledger, "paystack", webhook_secret="sk_test_ps", api_key="sk_test_ps", test_mode=True)
    run_worker(paystack(client, ledger, "charge.success", amount_minor=5_000_000, txn_id="99001",
                        reference="T9901_412829_abc").pk)  # fmt: skip
    run_worker(paystack(client, ledger, "refund.processed", amount_minor=1_500_000, reference="T9901_412829_abc",
                        event_id="132013318360").pk)  # fmt: skip
    sync(ledger.school)
    payment = Payment.objects.get(account=account)
    assert Payment.objects.filter(account=account).count() == 1
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor) == (
        S.PARTIALLY_REFUNDED, 5_000_000, 1_500_000,
    )  # fmt: skip
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 1_500_000), ("SalesReceipt", 5_000_000)]


def test_a_provider_cannot_settle_another_providers_payment(client, books):
    ledger = books("ng", "NGN")
    provider_account(ledger, "paystack", webhook_secret="sk_test_ps", api_key="sk_test_ps", test_mode=True)
    stripe_account = provider_account(ledger, "stripe", webhook_secret="whsec_x", api_key="sk_test_x", test_mode=True)
    started = Payment.objects.create(
        school=ledger.school, account=stripe_account, provider="stripe", reference="PSTRIPE00001",
        amount_minor=5_000_000, currency="NGN",
    )  # fmt: skip
    run_worker(paystack(client, ledger, "charge.success", amount_minor=5_000_000, txn_id="99002",
                        reference="PSTRIPE00001").pk)  # fmt: skip
    started.refresh_from_db()
    assert started.status == S.PENDING
    # The Paystack event is its own payment in its own account.
    assert Payment.objects.get(provider="paystack").provider_reference == "PSTRIPE00001"
