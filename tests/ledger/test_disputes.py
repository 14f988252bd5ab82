"""Disputes (chargebacks) from the providers' documented events: disputed while open, back to
succeeded when won, charged back when lost, and a lost one reaches QuickBooks once, as a
RefundReceipt of the amount taken back."""

from __future__ import annotations

import json

import pytest
from django.test import TestCase

from core.status import PaymentStatus as S
from payments.models import Payment
from providers.paystack.wire import paystack_delivery
from providers.stripe.wire import stripe_delivery
from quickbooks_sync import services as qbo
from tests.conftest import process_pending
from tests.factories import report
from tests.ledger.conftest import provider_account
from tests.ledger.test_any_order import documents_of
from tests.providers.helpers import payloads_dir, post

pytestmark = pytest.mark.django_db


def documented(provider: str, name: str) -> dict:
    return json.loads((payloads_dir(provider) / "documented" / f"{name}.json").read_text())


def deliver(client, school, provider, delivery) -> int:
    status = post(client, provider, delivery, school=school.code).status_code
    with TestCase.captureOnCommitCallbacks(execute=True):
        process_pending()
    return status


def sync(school) -> None:
    qbo.qbo_backlog_scan()
    qbo.qbo_school_sync(school_id=school.pk)


def stripe_dispute(name: str, event_id: str) -> bytes:
    payload = documented("stripe", name)
    payload["id"] = event_id  # dj-stripe's fixtures share one event id
    return json.dumps(payload).encode()


@pytest.fixture
def stripe_payment(books):
    """The payment the documented dj-stripe disputes are about (USD 10.00), synced to QuickBooks."""
    ledger = books("us", "USD")
    account = provider_account(ledger, "stripe", webhook_secret="whsec_d", api_key="sk_test_d", test_mode=True)
    payment = Payment(account=account, external_txn_id="pi_1JAyTwJSZQVUcJYgBbsz0NuH", reference=None,
                      currency="USD", amount_minor=1000)  # fmt: skip
    report(payment, status=S.SUCCEEDED, amount_minor=1000)
    payment = Payment.objects.get(account=account)
    Payment.objects.filter(pk=payment.pk).update(student=ledger.student, mapping_status="mapped")
    sync(ledger.school)
    return ledger, Payment.objects.get(pk=payment.pk)


def test_a_lost_dispute_is_charged_back_and_booked_once(client, stripe_payment, fake_qbo):
    ledger, payment = stripe_payment
    opened = stripe_dispute("charge.dispute.created.needs_response.with-payment_intent.djstripe", "evt_dispute_1")
    assert deliver(client, ledger.school, "stripe", stripe_delivery(opened, ["whsec_d"])) == 202
    payment.refresh_from_db()
    assert (payment.status, payment.disputed_amount_minor, payment.net_minor) == (S.DISPUTED, 1000, 1000)
    sync(ledger.school)
    assert documents_of(fake_qbo, ledger.realm, payment) == [("SalesReceipt", 1000)]  # nothing while open

    lost = stripe_dispute("charge.dispute.closed.lost.DERIVED", "evt_dispute_2")
    assert deliver(client, ledger.school, "stripe", stripe_delivery(lost, ["whsec_d"])) == 202
    assert deliver(client, ledger.school, "stripe", stripe_delivery(lost, ["whsec_d"])) == 200  # redelivered
    sync(ledger.school)
    payment.refresh_from_db()
    assert (payment.status, payment.charged_back_amount_minor, payment.net_minor) == (S.CHARGED_BACK, 1000, 0)
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 1000), ("SalesReceipt", 1000)]
    (receipt,) = [doc for doc in fake_qbo.objects(ledger.realm, "RefundReceipt") if str(payment.pk) in doc["PrivateNote"]]
    assert receipt["Line"][0]["Description"].startswith("Chargeback (dispute lost) of school fees")


def test_a_won_dispute_leaves_the_payment_and_the_books_as_they_were(client, stripe_payment, fake_qbo):
    ledger, payment = stripe_payment
    for number, name in enumerate(("charge.dispute.created.needs_response.with-payment_intent.djstripe",
                                   "charge.dispute.funds_withdrawn.with-payment_intent.djstripe",
                                   "charge.dispute.closed.won.with-payment_intent.djstripe")):  # fmt: skip
        deliver(client, ledger.school, "stripe", stripe_delivery(stripe_dispute(name, f"evt_won_{number}"), ["whsec_d"]))
    sync(ledger.school)
    payment.refresh_from_db()
    assert (payment.status, payment.disputed_amount_minor, payment.net_minor) == (S.SUCCEEDED, 0, 1000)
    assert documents_of(fake_qbo, ledger.realm, payment) == [("SalesReceipt", 1000)]


def test_the_close_arriving_before_the_opening_gives_the_same_answer(client, stripe_payment, fake_qbo):
    ledger, payment = stripe_payment
    lost = stripe_dispute("charge.dispute.closed.lost.DERIVED", "evt_late_2")
    opened = stripe_dispute("charge.dispute.created.needs_response.with-payment_intent.djstripe", "evt_late_1")
    deliver(client, ledger.school, "stripe", stripe_delivery(lost, ["whsec_d"]))
    deliver(client, ledger.school, "stripe", stripe_delivery(opened, ["whsec_d"]))
    sync(ledger.school)
    payment.refresh_from_db()
    assert (payment.status, payment.charged_back_amount_minor) == (S.CHARGED_BACK, 1000)
    assert documents_of(fake_qbo, ledger.realm, payment) == [("RefundReceipt", 1000), ("SalesReceipt", 1000)]


def test_paystack_chargeback_accepted_for_a_silent_merchant_is_lost(client, books, fake_qbo):
    ledger = books("ng", "NGN")
    account = provider_account(ledger, "paystack", webhook_secret="sk_live_d", api_key="sk_live_d", test_mode=False)
    payment = Payment(account=account, external_txn_id="896467592", currency="NGN", amount_minor=5700)
    report(payment, status=S.SUCCEEDED, amount_minor=5700)
    resolve = json.dumps(documented("paystack", "charge.dispute.resolve.auto-accepted")).encode()
    assert deliver(client, ledger.school, "paystack", paystack_delivery(resolve, "sk_live_d")) == 202
    payment = Payment.objects.get(account=account)
    assert (payment.status, payment.charged_back_amount_minor, payment.net_minor) == (S.CHARGED_BACK, 5700, 0)
