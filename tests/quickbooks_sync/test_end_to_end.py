"""The whole loop as it runs in production: a signed webhook, a Celery worker on the Redis
broker applies it and maps the student through the School Directory, the payment becomes ready
and the same worker syncs it to (fake) QuickBooks. The backlog scan catches what no one asked for."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from payments.models import AuditLog, Payment
from quickbooks_sync import services
from quickbooks_sync.models import QboAdjustmentSync, QboPaymentSync, SyncStatus
from tests.conftest import post_webhook, sign, surepay_body, wait_for
from tests.factories import report
from tests.quickbooks_sync.conftest import REALM, customer_for, ready_payment


@pytest.mark.django_db(transaction=True)
def test_a_webhook_ends_as_an_invoice_payment_in_quickbooks(
    client, account, connection, fake_qbo, fake_directory, celery_worker
):
    customer = customer_for(fake_qbo, "Amina Nakato (STU-0001)")
    invoice = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=250_000)
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202

    record = wait_for(lambda: QboPaymentSync.objects.filter(status=SyncStatus.SYNCED).first(), timeout=20)
    payment = Payment.objects.get()
    assert record.payment_id == payment.pk
    (stored,) = fake_qbo.objects(REALM, "Payment")
    assert (record.txn_type, record.txn_id) == ("Payment", stored["Id"])
    assert stored["TotalAmt"] == 100_000 and stored["CustomerRef"] == {"value": customer["Id"]}
    assert fake_qbo.objects(REALM, "Invoice")[0]["Balance"] == 150_000
    assert stored["Line"][0]["LinkedTxn"] == [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    actions = list(AuditLog.objects.filter(target_id=str(payment.pk)).order_by("id").values_list("action", flat=True))
    assert actions == ["payment.webhook", "payment.mapped", "qbo.synced"]

    # The provider reverses part of it: a RefundReceipt of that part follows.
    refund = surepay_body(event_id="evt-002", status="REVERSED", amount="40,000")
    assert post_webhook(client, refund, signature=sign(refund)).status_code == 202
    wait_for(lambda: QboAdjustmentSync.objects.filter(status=SyncStatus.SYNCED).exists(), timeout=20)
    assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "RefundReceipt")] == [40_000]
    # Delivered again, nothing new is posted anywhere.
    assert post_webhook(client, body, signature=sign(body)).status_code == 200
    assert len(fake_qbo.objects(REALM, "Payment")) == 1


@pytest.mark.django_db
class TestBacklogScan:
    def test_a_ready_payment_nobody_asked_about_is_found_and_its_school_woken(
        self, account, student, connection, fake_qbo, django_capture_on_commit_callbacks
    ):
        payment = ready_payment(account, student)  # became ready on a path that did not ask
        with django_capture_on_commit_callbacks() as callbacks:
            assert services.qbo_backlog_scan() == [payment.school_id]
        assert QboPaymentSync.objects.get(payment=payment).status == SyncStatus.PENDING
        assert len(callbacks) == 1  # one wake for the school, not one per payment
        assert services.qbo_backlog_scan() == [payment.school_id]  # still due: woken again
        services.qbo_school_sync(school_id=payment.school_id)
        assert services.qbo_backlog_scan() == []

    def test_a_refund_nobody_asked_about_is_found(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=payment.school_id)
        # A refund that reached the ledger on a path that did not tell the books.
        with mock.patch("payments.services.payment_offer_to_books_on_commit"):
            report(payment, refunds=[("re_1", 30_000)])
        services.qbo_backlog_scan()
        services.qbo_school_sync(school_id=payment.school_id)
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "RefundReceipt")] == [30_000]

    def test_expired_claims_and_due_retries_are_woken_but_future_ones_wait(
        self, account, student, connection, fake_qbo
    ):
        due, later, claimed = (ready_payment(account, student) for _ in range(3))
        for payment in (due, later, claimed):
            services.qbo_sync_request(payment_id=payment.pk)
        now = timezone.now()
        QboPaymentSync.objects.filter(payment=later).update(next_attempt_at=now + timedelta(hours=1))
        QboPaymentSync.objects.filter(payment=claimed).update(
            claimed_until=now - timedelta(seconds=1)
        )  # a dead worker's
        services.qbo_school_sync(school_id=connection.school_id)
        statuses = dict(QboPaymentSync.objects.values_list("payment_id", "status"))
        assert statuses == {due.pk: SyncStatus.SYNCED, later.pk: SyncStatus.PENDING, claimed.pk: SyncStatus.SYNCED}

    def test_paused_work_of_a_school_that_can_sync_again_is_resumed(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        QboPaymentSync.objects.update(status=SyncStatus.PAUSED)
        assert services.qbo_backlog_scan() == [connection.school_id]
        assert QboPaymentSync.objects.get().status == SyncStatus.PENDING

    def test_schools_that_cannot_sync_are_left_alone(self, account, student, connection, fake_qbo):
        connection.item_id = ""
        connection.save()
        ready_payment(account, student)
        assert services.qbo_backlog_scan() == []
        assert not QboPaymentSync.objects.exists()


@pytest.mark.django_db
def test_many_payments_settling_at_once_queue_one_message(
    account, student, connection, fake_qbo, django_capture_on_commit_callbacks
):
    import redis
    from django.conf import settings

    queue = redis.Redis.from_url(settings.REDIS_URL)
    payments = [ready_payment(account, student) for _ in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        for payment in payments:
            services.qbo_sync_request(payment_id=payment.pk)
    assert queue.llen("celery") == 1  # one run drains all five
    services.qbo_school_sync(school_id=connection.school_id)  # that run starts: a new request needs a new message
    with django_capture_on_commit_callbacks(execute=True):
        services.qbo_sync_request(payment_id=ready_payment(account, student).pk)
    assert queue.llen("celery") == 2
