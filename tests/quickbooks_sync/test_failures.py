"""When things go wrong a payment still lands exactly once: dropped answers, outages, timeouts,
refusals, throttling. Retries never post twice: a stored id or a look-up decides first, and a
resend repeats the same requestid and body."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from django.utils import timezone

from payments.models import AuditLog
from quickbooks_sync import services
from quickbooks_sync.coordination import coordinator
from quickbooks_sync.documents import request_id_for
from quickbooks_sync.models import QboConnection, QboCustomer, QboPaymentSync, SyncStatus
from tests.quickbooks_sync.conftest import REALM, customer_for, ready_payment

pytestmark = pytest.mark.django_db


def run(school_id) -> str:
    return services.qbo_school_sync(school_id=school_id)


def make_due(record: QboPaymentSync) -> None:
    """Skip the backoff wait: the retry falls due now."""
    QboPaymentSync.objects.filter(pk=record.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def receipt_creates(fake):
    return [r for r in fake.api_requests(REALM) if r.method == "POST" and r.path.endswith("/salesreceipt")]


def record_of(payment) -> QboPaymentSync:
    return QboPaymentSync.objects.get(payment=payment)


def known_customer(fake, connection, student) -> dict:
    """The student's customer exists and is mapped: a round is then one invoice query and the
    create."""
    customer = customer_for(fake, f"{student.full_name} ({student.student_number})")
    QboCustomer.objects.create(
        school=connection.school,
        realm_id=REALM,
        student=student,
        customer_id=customer["Id"],
        display_name=customer["DisplayName"],
    )
    return customer


class TestDroppedAnswer:
    def test_the_lookup_finds_what_the_first_attempt_created_and_nothing_is_sent_again(
        self, account, student, connection, fake_qbo
    ):
        fake_qbo.dedupe_request_ids = False  # only our own look-up stands between us and a duplicate
        fake_qbo.drop_next_create(entity="SalesReceipt")
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)

        assert run(payment.school_id) == "unavailable"
        record = record_of(payment)
        assert (record.status, record.in_doubt, record.attempts, record.txn_id) == (SyncStatus.PENDING, True, 1, "")
        assert "broke before it answered" in record.last_error
        assert record.next_attempt_at > timezone.now()
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1  # it did land

        make_due(record)
        assert run(payment.school_id) == "idle"
        record.refresh_from_db()
        (receipt,) = fake_qbo.objects(REALM, "SalesReceipt")
        assert (record.status, record.txn_id, record.in_doubt) == (SyncStatus.SYNCED, receipt["Id"], False)
        assert len(receipt_creates(fake_qbo)) == 1
        lookup = [r.body.decode() for r in fake_qbo.api_requests(REALM) if r.path.endswith("/query")][-1]
        assert lookup == (
            f"SELECT * FROM SalesReceipt WHERE CustomerRef = '{record.customer_id}' "
            f"AND TxnDate = '{record.txn_date.isoformat()}' STARTPOSITION 1 MAXRESULTS 1000"
        )
        assert AuditLog.objects.get(action="qbo.synced").details["via"] == "lookup"

    def test_when_the_lookup_misses_it_the_same_requestid_is_replayed(self, account, student, connection, fake_qbo):
        fake_qbo.query_lag = {"SalesReceipt"}  # the look-up cannot see the landed create yet
        fake_qbo.drop_next_create(entity="SalesReceipt")
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        run(payment.school_id)
        make_due(record_of(payment))
        run(payment.school_id)

        record = record_of(payment)
        (receipt,) = fake_qbo.objects(REALM, "SalesReceipt")
        assert (record.status, record.txn_id, record.attempts) == (SyncStatus.SYNCED, receipt["Id"], 2)
        first, second = receipt_creates(fake_qbo)
        assert first.query["requestid"] == second.query["requestid"] == [record.request_id]
        assert first.body == second.body
        assert AuditLog.objects.get(action="qbo.synced").details["via"] == "create"

    def test_a_duplicate_request_fault_is_settled_by_a_lookup(self, account, student, connection, fake_qbo):
        fake_qbo.request_id_replay = "fault600"
        fake_qbo.query_lag = {"SalesReceipt"}
        fake_qbo.drop_next_create(entity="SalesReceipt")
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        run(payment.school_id)
        make_due(record_of(payment))
        run(payment.school_id)  # fault 600, and the look-up still misses: wait, in doubt
        record = record_of(payment)
        assert (record.status, record.in_doubt) == (SyncStatus.PENDING, True)
        assert "seen this request" in record.last_error

        fake_qbo.index_now()
        make_due(record)
        run(payment.school_id)
        record.refresh_from_db()
        assert record.status == SyncStatus.SYNCED
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1
        assert len(receipt_creates(fake_qbo)) == 2

    def test_doubt_survives_a_refused_resend(self, account, student, connection, fake_qbo, settings):
        """The first create landed unseen; its resend is throttled. A refusal of the resend
        proves nothing about the first attempt: the record stays in doubt, and the next
        attempt looks again (and finds it) instead of posting a fresh document."""
        settings.QBO_THROTTLE_PAUSE_SECONDS = 0.2
        settings.QBO_LIMIT_MAX_WAIT_SECONDS = 2
        fake_qbo.dedupe_request_ids = False
        fake_qbo.query_lag = {"SalesReceipt"}
        known_customer(fake_qbo, connection, student)
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.drop_next_create(entity="SalesReceipt")
        assert run(payment.school_id) == "unavailable"
        make_due(record_of(payment))
        fake_qbo.fail_next(1, status=429, path="salesreceipt")
        assert run(payment.school_id) == "throttled"
        record = record_of(payment)
        assert (record.in_doubt, record.revision, record.request_body, record.attempts) == (True, 1, None, 1)

        fake_qbo.index_now()
        make_due(record)
        assert run(payment.school_id) == "idle"
        record.refresh_from_db()
        (receipt,) = fake_qbo.objects(REALM, "SalesReceipt")
        assert (record.status, record.txn_id) == (SyncStatus.SYNCED, receipt["Id"])
        assert AuditLog.objects.get(action="qbo.synced").details["via"] == "lookup"

    def test_with_a_real_worker_the_task_retries_and_quickbooks_holds_one_document(
        self, transactional_db, account, student, connection, fake_qbo, celery_worker, settings
    ):
        settings.TASK_RETRY_BASE_SECONDS = 0.2
        fake_qbo.dedupe_request_ids = False
        fake_qbo.drop_next_create(entity="SalesReceipt")
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)  # outside a transaction: enqueued at once

        from tests.conftest import wait_for

        record = wait_for(
            lambda: QboPaymentSync.objects.filter(payment=payment, status=SyncStatus.SYNCED).first(), timeout=20
        )
        assert record.attempts == 1  # the retry found the document; it sent nothing
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1
        assert len(receipt_creates(fake_qbo)) == 1


class TestOutages:
    def test_a_503_before_anything_is_sent_costs_an_attempt_and_is_retried(
        self, account, student, connection, fake_qbo
    ):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.fail_next(1, status=503)  # the customer look-up
        assert run(payment.school_id) == "unavailable"
        record = record_of(payment)
        assert (record.status, record.attempts, record.in_doubt) == (SyncStatus.PENDING, 1, False)
        assert record.last_error == "QuickBooks answered HTTP 503"
        assert record.next_attempt_at > timezone.now()
        assert run(payment.school_id) == "idle"  # not due yet: nothing happens
        make_due(record)
        run(payment.school_id)
        record.refresh_from_db()
        assert (record.status, record.attempts) == (SyncStatus.SYNCED, 2)
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1

    def test_a_5xx_on_the_create_is_in_doubt_and_resent_identically(self, account, student, connection, fake_qbo):
        known_customer(fake_qbo, connection, student)
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.fail_next(1, status=500, path="salesreceipt")
        assert run(payment.school_id) == "unavailable"
        record = record_of(payment)
        assert (record.in_doubt, record.attempts, record.txn_type) == (True, 1, "SalesReceipt")
        assert record.last_error == "QuickBooks answered HTTP 500"
        make_due(record)
        run(payment.school_id)
        record.refresh_from_db()
        assert (record.status, record.attempts, record.in_doubt) == (SyncStatus.SYNCED, 2, False)
        first, second = receipt_creates(fake_qbo)
        assert first.query["requestid"] == second.query["requestid"] == [record.request_id]
        assert first.body == second.body
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1

    def test_a_timeout_on_the_create_is_in_doubt_and_the_lookup_finds_it(
        self, account, student, connection, fake_qbo, settings
    ):
        known_customer(fake_qbo, connection, student)
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        settings.QBO_READ_TIMEOUT_SECONDS = 0.3
        fake_qbo.latency_by_path = {"salesreceipt": 0.6}
        assert run(payment.school_id) == "unavailable"
        record = record_of(payment)
        assert (record.last_error, record.in_doubt, record.attempts) == ("QuickBooks did not answer in time", True, 1)
        fake_qbo.latency_by_path = {}
        from tests.conftest import wait_for

        wait_for(lambda: fake_qbo.objects(REALM, "SalesReceipt"), timeout=3)  # the slow create lands
        make_due(record)
        run(payment.school_id)
        record.refresh_from_db()
        assert (record.status, record.attempts) == (SyncStatus.SYNCED, 1)
        assert len(receipt_creates(fake_qbo)) == 1

    def test_unreachable_quickbooks_is_never_in_doubt(self, account, student, connection, fake_qbo, settings):
        known_customer(fake_qbo, connection, student)
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        from tests.conftest import free_port

        settings.QBO_API_BASE_URL = f"http://127.0.0.1:{free_port()}/v3"
        assert run(payment.school_id) == "unavailable"
        record = record_of(payment)
        assert (record.in_doubt, record.attempts) == (False, 1)
        assert record.last_error.startswith("QuickBooks could not be reached")

    def test_after_the_last_attempt_the_failure_is_visible_and_a_retry_looks_up_first(
        self, account, student, connection, fake_qbo, settings
    ):
        settings.QBO_SYNC_MAX_ATTEMPTS = 2
        fake_qbo.dedupe_request_ids = False
        fake_qbo.query_lag = {"SalesReceipt"}  # the look-up misses what the first attempt created
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.drop_next_create(2, entity="SalesReceipt")
        run(payment.school_id)
        make_due(record_of(payment))
        run(payment.school_id)
        record = record_of(payment)
        assert record.status == SyncStatus.FAILED
        assert record.last_error.startswith("gave up after 2 attempts: the connection to QuickBooks broke")
        assert record.in_doubt  # it may be in QuickBooks: a retry must look before it sends
        assert AuditLog.objects.filter(action="qbo.sync_failed", target_id=str(payment.pk)).exists()

        fake_qbo.index_now()
        assert services.qbo_sync_retry(payment_sync_ids=[record.pk], actor="staff") == 1
        run(payment.school_id)
        record.refresh_from_db()
        assert record.status == SyncStatus.SYNCED
        # Two drops landed two documents (the fake forgot the requestid); the look-up keeps the
        # oldest and tells staff about the other.
        receipts = sorted(fake_qbo.objects(REALM, "SalesReceipt"), key=lambda r: int(r["Id"]))
        assert record.txn_id == receipts[0]["Id"]
        assert AuditLog.objects.get(action="qbo.duplicate_found").details["txn_ids"] == [r["Id"] for r in receipts]


class TestRefusals:
    def test_a_validation_fault_shows_intuits_message_and_a_retry_uses_a_new_requestid(
        self, account, student, connection, fake_qbo
    ):
        fake_qbo.companies[REALM].table("Item")["1"]["Active"] = False  # someone deleted the item
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        assert run(payment.school_id) == "idle"
        record = record_of(payment)
        assert record.status == SyncStatus.FAILED
        assert record.last_error.startswith(
            "Invalid Reference Id: Invalid Reference Id : Item assigned to this transaction"
        )
        assert record.last_error.endswith("(QuickBooks error 2500)")
        assert (record.last_error_code, record.revision, record.in_doubt, record.request_body) == (
            "2500",
            1,
            False,
            None,
        )
        audit = AuditLog.objects.get(action="qbo.sync_failed")
        assert audit.details["code"] == "2500"

        QboConnection.objects.filter(pk=connection.pk).update(item_id="2", item_name="Uniforms")
        assert services.qbo_sync_retry(payment_sync_ids=[record.pk], actor="bursar") == 1
        assert AuditLog.objects.get(action="qbo.sync_retry").actor == "bursar"
        run(payment.school_id)
        record.refresh_from_db()
        assert record.status == SyncStatus.SYNCED
        first, second = receipt_creates(fake_qbo)
        assert first.query["requestid"] == [
            request_id_for(realm_id=REALM, kind="payment", payment_id=payment.pk, revision=0)
        ]
        assert second.query["requestid"] == [
            request_id_for(realm_id=REALM, kind="payment", payment_id=payment.pk, revision=1)
        ]
        assert second.json()["Line"][0]["SalesItemLineDetail"]["ItemRef"] == {"value": "2"}

    def test_a_payment_in_another_currency_is_never_posted(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student, 10_000, currency="USD")
        services.qbo_sync_request(payment_id=payment.pk)
        run(payment.school_id)
        record = record_of(payment)
        assert record.status == SyncStatus.FAILED
        assert record.last_error == (
            "The payment is in USD but the QuickBooks company's home currency is UGX and multicurrency is off."
        )
        assert fake_qbo.api_requests(REALM) == []

    def test_payments_older_than_the_connection_wait_for_staff(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student)
        QboConnection.objects.filter(pk=connection.pk).update(sync_since=timezone.now() + timedelta(minutes=1))
        assert services.qbo_sync_request(payment_id=payment.pk) is None
        assert services.qbo_sync_request(payment_id=payment.pk, requested_by="bursar") == SyncStatus.PENDING


class TestThrottling:
    def test_a_429_pauses_the_company_without_spending_an_attempt(
        self, account, student, connection, fake_qbo, settings
    ):
        settings.QBO_THROTTLE_PAUSE_SECONDS = 0.6
        settings.QBO_LIMIT_MAX_WAIT_SECONDS = 0.1
        known_customer(fake_qbo, connection, student)
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.throttle_next(1)
        assert run(payment.school_id) == "throttled"
        record = record_of(payment)
        assert (record.status, record.attempts) == (SyncStatus.PENDING, 0)
        assert record.last_error == "QuickBooks answered 429 (too many requests)"
        assert coordinator().stats(REALM)["paused_for"] > 0.3
        assert fake_qbo.throttled == 1

        # While paused nothing is sent, not even when the record is due.
        make_due(record)
        calls = len(fake_qbo.api_requests(REALM))
        assert run(payment.school_id) == "throttled"
        assert len(fake_qbo.api_requests(REALM)) == calls

        time.sleep(0.7)
        make_due(record)
        assert run(payment.school_id) == "idle"
        record.refresh_from_db()
        assert (record.status, record.attempts) == (SyncStatus.SYNCED, 1)
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1


class TestLane:
    def test_one_lane_per_school_and_a_request_while_busy_is_not_lost(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        lane = coordinator().try_lock(f"lane:{payment.school_id}", ttl=30)
        assert run(payment.school_id) == "busy"
        assert fake_qbo.api_requests(REALM) == []
        lane.release()
        # The holder checks the flag before it lets go; here we are the holder.
        assert coordinator().flag_take(f"sync-requested:{payment.school_id}")
        assert run(payment.school_id) == "idle"
        assert record_of(payment).status == SyncStatus.SYNCED


def test_txn_date_is_the_day_the_payment_succeeded(account, student, connection, fake_qbo):
    payment = ready_payment(account, student)
    type(payment).objects.filter(pk=payment.pk).update(
        status_changed_at=timezone.make_aware(timezone.datetime(2025, 3, 4, 10))
    )
    services.qbo_sync_request(payment_id=payment.pk)
    assert record_of(payment).txn_date == date(2025, 3, 4)


@pytest.mark.django_db(transaction=True)
def test_parallel_sends_with_failures_still_land_each_payment_once(account, connection, fake_qbo, settings, school):
    """Four documents in flight at once; two answers are dropped and one create meets a 500.
    After the retries every payment is in QuickBooks exactly once."""
    from tests.factories import StudentFactory

    settings.QBO_SYNC_CONCURRENCY = 4
    fake_qbo.dedupe_request_ids = False  # only our look-ups stand between us and duplicates
    payments = []
    for _ in range(12):
        student = StudentFactory(school=school)
        known_customer(fake_qbo, connection, student)
        payments.append(ready_payment(account, student))
        services.qbo_sync_request(payment_id=payments[-1].pk)
    fake_qbo.drop_next_create(2, entity="SalesReceipt")
    fake_qbo.fail_next(1, status=500, path="salesreceipt")
    for _ in range(5):
        run(school.pk)
        QboPaymentSync.objects.filter(status=SyncStatus.PENDING).update(next_attempt_at=None)
    assert set(QboPaymentSync.objects.values_list("status", flat=True)) == {SyncStatus.SYNCED}
    receipts = fake_qbo.objects(REALM, "SalesReceipt")
    assert len(receipts) == 12
    markers = sorted(r["PrivateNote"].rsplit(" ", 1)[1] for r in receipts)
    assert markers == sorted(f"[sp:{p.pk}]" for p in payments)
    assert set(QboPaymentSync.objects.values_list("txn_id", flat=True)) == {r["Id"] for r in receipts}
