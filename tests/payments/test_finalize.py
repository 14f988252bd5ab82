"""Finalizing: a success settles its payment request exactly once, with the exact amount, in the
transaction that records the success. Every path that makes a payment succeed goes through
``payment_finalize``: a webhook, a provider confirmation, the janitor, a staff confirmation."""

import hashlib
import hmac
import json
import threading

import pytest
from django.db import connection

from core.status import PaymentStatus
from payments.models import AuditLog, Payment, PaymentRequest, ReviewFlag
from payments.services import payment_finalize, payment_provider_status_apply
from providers.base import NormalizedStatus
from tests.conftest import process_pending
from tests.factories import PaymentFactory, PaymentRequestFactory

pytestmark = pytest.mark.django_db


def intent(payment_request, account, **fields):
    """A payment started from the pay link, as ``payment_checkout_start`` leaves it."""
    defaults = dict(
        account=account,
        school=payment_request.school,
        provider=account.provider,
        external_txn_id=None,
        reference=f"PTEST{Payment.objects.count():07d}",
        amount_minor=payment_request.amount_minor,
        currency=payment_request.currency,
        payment_request=payment_request,
        student=payment_request.student,
        provider_student_id=payment_request.student.student_number,
        mapping_status="mapped",
    )
    defaults.update(fields)
    return PaymentFactory(**defaults)


def dummy_webhook(
    client, payment, *, amount_minor=None, currency=None, event_id=None, txn_id=None, status="succeeded", process=True
):
    payload = {
        "id": event_id or f"devt-{payment.pk}",
        "type": f"payment.{status}",
        "data": {
            "txn_id": txn_id or f"dtxn-{payment.pk.hex[:8]}",
            "reference": payment.reference,
            "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
            "currency": currency or payment.currency,
            "student_id": payment.provider_student_id,
        },
    }
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(b"dummy-secret", body, hashlib.sha256).hexdigest()
    response = client.post(
        "/api/webhooks/dummy/ng", data=body, content_type="application/json", HTTP_X_DUMMY_SIGNATURE=signature
    )
    assert response.status_code in (200, 202), response.content
    return process_pending() if process else None


def finalize_entries(payment):
    return list(
        AuditLog.objects.filter(action="payment.finalize", target_id=str(payment.pk)).values_list("details", flat=True)
    )


def test_an_exact_success_pays_the_request(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    results = dummy_webhook(client, payment)
    assert results == ["pending -> succeeded; request paid; student mapped"]
    payment.refresh_from_db()
    payment_request.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert (payment_request.status, payment_request.paid_payment_id) == (PaymentRequest.Status.PAID, payment.pk)
    assert payment_request.paid_at is not None
    assert payment.review_flag == ""
    [entry] = finalize_entries(payment)
    assert entry["result"] == "paid"
    assert entry["reason"] == "UGX 450,000 received as requested"
    assert AuditLog.objects.filter(action="payment_request.paid", target_id=str(payment_request.pk)).count() == 1


def test_pay_links_settled_in_one_worker_message_each_pay_their_request_once(
    client, payment_request, dummy_account, student, caplog
):
    other_request = PaymentRequestFactory(school=payment_request.school, student=student, amount_minor=450_000)
    payments = [intent(payment_request, dummy_account), intent(other_request, dummy_account)]
    for payment in payments:
        dummy_webhook(client, payment, process=False)
    # Both events in one message, applied in one transaction.
    assert process_pending() == ["pending -> succeeded; request paid; student mapped"] * 2
    assert not [record for record in caplog.records if record.name == "webhooks.batches"]
    for payment, request in zip(payments, (payment_request, other_request)):
        payment.refresh_from_db()
        request.refresh_from_db()
        assert (payment.status, request.status, request.paid_payment_id) == (PaymentStatus.SUCCEEDED, "paid", payment.pk)
        assert [entry["result"] for entry in finalize_entries(payment)] == ["paid"]
        # The settlement's entry comes first, as when each event is applied on its own.
        actions = AuditLog.objects.filter(target_id=str(payment.pk)).order_by("pk").values_list("action", flat=True)
        assert list(actions) == ["payment.webhook", "payment.finalize"]


def test_a_redelivered_success_does_not_finalize_twice(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    dummy_webhook(client, payment)
    dummy_webhook(client, payment)  # the same event again: a duplicate
    dummy_webhook(client, payment, event_id="devt-second-delivery")  # a second event, same success
    assert len(finalize_entries(payment)) == 1
    payment_request.refresh_from_db()
    assert payment_request.paid_payment_id == payment.pk


@pytest.mark.parametrize(
    ("amount_minor", "currency", "reason"),
    [
        (449_999, "UGX", "UGX 449,999 received, UGX 450,000 requested"),
        (450_001, "UGX", "UGX 450,001 received, UGX 450,000 requested"),
        (450_000, "KES", "KES 4,500.00 received, UGX 450,000 requested"),
    ],
)
def test_a_different_amount_or_currency_leaves_the_request_open_and_flags_the_payment(
    client, payment_request, dummy_account, amount_minor, currency, reason
):
    payment = intent(payment_request, dummy_account)
    [result] = dummy_webhook(client, payment, amount_minor=amount_minor, currency=currency)
    assert "request not settled: amount_mismatch" in result
    payment.refresh_from_db()
    payment_request.refresh_from_db()
    # The money is recorded as the provider confirmed it; nothing is rounded or dropped.
    assert (payment.status, payment.amount_minor, payment.currency) == (PaymentStatus.SUCCEEDED, amount_minor, currency)
    assert (payment.review_flag, payment.review_flag_reason) == (ReviewFlag.AMOUNT_MISMATCH, reason)
    assert payment_request.status == PaymentRequest.Status.OPEN
    assert payment_request.paid_payment_id is None
    [entry] = finalize_entries(payment)
    assert (entry["result"], entry["reason"]) == ("amount_mismatch", reason)
    assert (entry["requested_minor"], entry["requested_currency"]) == (450_000, "UGX")


def test_a_second_success_for_a_paid_request_is_kept_as_an_overpayment(client, payment_request, dummy_account):
    first = intent(payment_request, dummy_account)
    second = intent(payment_request, dummy_account)
    dummy_webhook(client, first)
    [result] = dummy_webhook(client, second)
    assert "request not settled: overpayment" in result
    second.refresh_from_db()
    payment_request.refresh_from_db()
    assert second.status == PaymentStatus.SUCCEEDED  # the money is kept, never lost
    assert second.review_flag == ReviewFlag.OVERPAYMENT
    assert second.review_flag_reason == f"UGX 450,000 received, but the request was already paid by payment {first.pk}"
    assert payment_request.paid_payment_id == first.pk


def test_money_for_a_cancelled_request_is_kept_and_flagged(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    PaymentRequest.objects.filter(pk=payment_request.pk).update(status=PaymentRequest.Status.CANCELLED)
    dummy_webhook(client, payment)
    payment.refresh_from_db()
    assert (payment.status, payment.review_flag) == (PaymentStatus.SUCCEEDED, ReviewFlag.OVERPAYMENT)
    assert payment.review_flag_reason == "UGX 450,000 received for a cancelled request"


def test_a_provider_confirmation_finalizes_too(payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    change = payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="test",
    )
    assert change.note == "pending -> succeeded; request paid"
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.PAID


def test_a_failure_does_not_touch_the_request(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    dummy_webhook(client, payment, status="failed")
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.OPEN
    assert finalize_entries(payment) == []


def test_a_late_success_after_expiry_still_pays_the_request(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account, status=PaymentStatus.EXPIRED)
    dummy_webhook(client, payment)
    payment_request.refresh_from_db()
    assert payment_request.paid_payment_id == payment.pk


@pytest.mark.django_db(transaction=True)
def test_finalize_refuses_to_run_outside_a_transaction(payment_request, dummy_account):
    payment = intent(payment_request, dummy_account, status=PaymentStatus.SUCCEEDED)
    with pytest.raises(RuntimeError, match="inside the caller's transaction"):
        payment_finalize(payment=payment, actor_type="system")


def test_a_payment_without_a_request_is_not_finalized(client, dummy_account):
    payment = PaymentFactory(account=dummy_account, reference="PLAIN0000001", external_txn_id=None)
    dummy_webhook(client, payment)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert AuditLog.objects.filter(action="payment.finalize").count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_successes_finalized_at_the_same_moment_pay_the_request_once(payment_request, dummy_account):
    """Two workers confirm two payments of one request at once (two tabs, both paid): the
    request's row lock lets exactly one settle it; the other is kept as an overpayment."""
    payments = [intent(payment_request, dummy_account) for _ in range(2)]
    barrier = threading.Barrier(len(payments))
    outcomes = {}

    def confirm(payment):
        try:
            barrier.wait()
            change = payment_provider_status_apply(
                payment_id=payment.pk,
                status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
                source="race",
            )
            outcomes[payment.pk] = change.note
        finally:
            connection.close()

    threads = [threading.Thread(target=confirm, args=(payment,)) for payment in payments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(note.split("; ", 1)[1] for note in outcomes.values()) == [
        "request not settled: overpayment",
        "request paid",
    ]
    payment_request.refresh_from_db()
    winner = Payment.objects.get(pk=payment_request.paid_payment_id)
    loser = Payment.objects.exclude(pk=winner.pk).get()
    assert (winner.review_flag, loser.review_flag) == ("", ReviewFlag.OVERPAYMENT)
    assert set(Payment.objects.values_list("status", flat=True)) == {PaymentStatus.SUCCEEDED}
