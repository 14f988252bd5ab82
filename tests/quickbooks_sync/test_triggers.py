"""Every way a payment becomes ready (settled and mapped to a student) offers it to QuickBooks
when the change commits, not only webhooks: a manual payment confirmed by staff, and a success
the janitor learns from the provider's API. (The backlog scan is only the safety net.)"""

import pytest
from django.test import TestCase

from core.status import PaymentStatus
from payments.models import Payment
from payments.services import manual_payment_review, manual_payment_submit, payment_provider_status_apply
from providers.base import NormalizedStatus
from quickbooks_sync import services
from quickbooks_sync.models import QboPaymentSync, SyncStatus
from tests.factories import AccountFactory, PaymentRequestFactory, SchoolFactory
from tests.quickbooks_sync.conftest import ready_payment

pytestmark = pytest.mark.django_db



def test_a_manual_payment_confirmed_by_staff_reaches_quickbooks(connection, student, fake_qbo, admin_user):
    request = PaymentRequestFactory(school=connection.school, student=student, amount_minor=450_000)
    with TestCase.captureOnCommitCallbacks(execute=True):
        payment = manual_payment_submit(
            payment_request_id=request.pk, method="bank_transfer", manual_reference="BANK-77", amount_minor=450_000
        )
    assert not QboPaymentSync.objects.exists()  # awaiting review: nothing is in the books yet

    with TestCase.captureOnCommitCallbacks(execute=True):
        manual_payment_review(payment_id=payment.pk, decision="confirm", note="Seen on the statement", reviewer=admin_user)
    record = QboPaymentSync.objects.get(payment=payment)
    services.qbo_school_sync(school_id=connection.school_id)
    record.refresh_from_db()
    assert record.status == SyncStatus.SYNCED
    (receipt,) = fake_qbo.objects(connection.realm_id, "SalesReceipt")
    assert receipt["TotalAmt"] in (450000, 450000.0, "450000")


def test_a_success_the_janitor_learns_reaches_quickbooks(connection, student, account):
    payment = Payment.objects.create(
        school=connection.school,
        account=account,
        provider=account.provider,
        external_txn_id="txn-janitor",
        amount_minor=100_000,
        currency="UGX",
        status=PaymentStatus.PROCESSING,
        student=student,
        mapping_status="mapped",
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        payment_provider_status_apply(
            payment_id=payment.pk,
            status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=100_000, currency="UGX"),
            source="janitor",
        )
    assert QboPaymentSync.objects.get(payment=payment).status == SyncStatus.PENDING


def test_payments_offered_together_are_each_recorded_and_one_error_keeps_no_other_out(
    connection, student, account, monkeypatch, caplog, django_assert_max_num_queries
):
    """The books hook gets the payments of a whole worker message: those of schools without
    QuickBooks are set aside by one query; a failure on one payment is logged and the others
    still reach the books (the backlog scan finds the failed one later)."""
    elsewhere = AccountFactory(school=SchoolFactory(code="nobooks"), provider="surepay")
    without_books = [ready_payment(elsewhere, None, mapping_status="pending") for _ in range(3)]
    with django_assert_max_num_queries(1):
        services.qbo_sync_offered(payment_ids=[payment.pk for payment in without_books])
    assert not QboPaymentSync.objects.exists()

    first, second = ready_payment(account, student), ready_payment(account, student)
    real_request = services.sync.qbo_sync_request

    def fails_for_first(*, payment_id, **kwargs):
        if payment_id == first.pk:
            raise RuntimeError("database hiccup")
        return real_request(payment_id=payment_id, **kwargs)

    monkeypatch.setattr(services.sync, "qbo_sync_request", fails_for_first)
    services.qbo_sync_offered(payment_ids=[first.pk, second.pk, *(payment.pk for payment in without_books)])
    assert list(QboPaymentSync.objects.values_list("payment_id", flat=True)) == [second.pk]
    assert any(f"offering payment {first.pk} to QuickBooks failed" in record.getMessage() for record in caplog.records)
