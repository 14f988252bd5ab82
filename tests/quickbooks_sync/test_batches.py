"""A round's documents go to QuickBooks in batch calls of up to 30, still exactly once: a batch
whose answer is lost is resolved document by document by look-ups, a fault of one document
concerns that document only, and the fake refuses batches the real API refuses."""

from __future__ import annotations

import pytest
import requests

from payments.models import AuditLog
from quickbooks_sync import documents, services
from quickbooks_sync.models import QboCustomer, QboPaymentSync, SyncStatus
from tests.factories import StudentFactory
from tests.quickbooks_sync.conftest import REALM, customer_for, ready_payment
from tests.quickbooks_sync.test_failures import make_due, run

pytestmark = pytest.mark.django_db


def ready_payments(account, school, fake, count: int, amount_minor: int = 70_000) -> list:
    """``count`` payments of students whose customers are known: each round is one invoice
    query and the creates."""
    payments = []
    for _ in range(count):
        student = StudentFactory(school=school)
        customer = customer_for(fake, f"{student.full_name} ({student.student_number})")
        QboCustomer.objects.create(
            school=school, realm_id=REALM, student=student, customer_id=customer["Id"],
            display_name=customer["DisplayName"],
        )  # fmt: skip
        payment = ready_payment(account, student, amount_minor)
        services.qbo_sync_request(payment_id=payment.pk)
        payments.append(payment)
    return payments


def batch_calls(fake) -> list:
    return [r for r in fake.api_requests(REALM) if r.path.endswith("/batch")]


def test_45_payments_take_two_batch_calls_and_land_once_each(settings, account, school, connection, fake_qbo):
    settings.QBO_SYNC_CHUNK_SIZE = 50
    ready_payments(account, school, fake_qbo, 45)
    assert run(school.pk) == "idle"

    sizes = [len(call.json()["BatchItemRequest"]) for call in batch_calls(fake_qbo)]
    assert sorted(sizes) == [15, 30]
    assert not [r for r in fake_qbo.api_requests(REALM) if r.path.endswith(("/salesreceipt", "/payment"))]
    receipts = fake_qbo.objects(REALM, "SalesReceipt")
    records = QboPaymentSync.objects.all()
    assert len(receipts) == 45 and {r.status for r in records} == {SyncStatus.SYNCED}
    assert {r.txn_id for r in records} == {receipt["Id"] for receipt in receipts}
    # Calls per payment: one invoice query and two batches for 45 payments.
    assert len(fake_qbo.api_requests(REALM)) / 45 < 0.1
    assert {entry.details["via"] for entry in AuditLog.objects.filter(action="qbo.synced")} == {"batch"}


def test_every_batch_carries_a_requestid_and_item_ids_within_intuits_lengths(account, school, connection, fake_qbo):
    ready_payments(account, school, fake_qbo, 3)
    run(school.pk)
    (call,) = batch_calls(fake_qbo)
    (request_id,) = call.query["requestid"]
    assert len(request_id) == 36
    assert all(len(item["bId"]) <= 10 for item in call.json()["BatchItemRequest"])


def test_a_batch_whose_answer_is_lost_is_resolved_by_lookups_without_a_duplicate(
    account, school, connection, fake_qbo
):
    fake_qbo.dedupe_request_ids = False  # only our own look-ups stand between us and duplicates
    fake_qbo.drop_next_create(entity="SalesReceipt")
    payments = ready_payments(account, school, fake_qbo, 5)

    assert run(school.pk) == "unavailable"
    records = list(QboPaymentSync.objects.all())
    assert {(r.status, r.in_doubt, r.txn_id) for r in records} == {(SyncStatus.PENDING, True, "")}
    assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 5  # they did land

    for record in records:
        make_due(record)
    assert run(school.pk) == "idle"
    receipts = fake_qbo.objects(REALM, "SalesReceipt")
    assert len(receipts) == 5  # nothing sent again
    assert len(batch_calls(fake_qbo)) == 1
    synced = {r.payment_id: r.txn_id for r in QboPaymentSync.objects.filter(status=SyncStatus.SYNCED)}
    assert set(synced) == {p.pk for p in payments}
    assert set(synced.values()) == {receipt["Id"] for receipt in receipts}
    assert {entry.details["via"] for entry in AuditLog.objects.filter(action="qbo.synced")} == {"lookup"}


def test_a_fault_of_one_document_fails_that_document_only(account, school, connection, fake_qbo):
    payments = ready_payments(account, school, fake_qbo, 4)
    gone = QboCustomer.objects.get(student=payments[2].student)
    gone.customer_id = "999999"  # a customer QuickBooks does not have: only this create is refused
    gone.save()

    run(school.pk)
    statuses = {r.payment_id: r.status for r in QboPaymentSync.objects.all()}
    assert statuses.pop(payments[2].pk) == SyncStatus.FAILED
    assert set(statuses.values()) == {SyncStatus.SYNCED}
    failed = QboPaymentSync.objects.get(payment=payments[2])
    assert failed.last_error and not failed.in_doubt
    assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 3


def test_a_batch_sent_again_under_its_requestid_is_answered_from_memory(account, school, connection, fake_qbo):
    """QuickBooks' second guard: the same documents in the same order, under the same batch
    requestid, create nothing new."""
    fake_qbo.query_lag = {"SalesReceipt"}  # the look-up cannot see the landed documents yet
    fake_qbo.drop_next_create(entity="SalesReceipt")
    ready_payments(account, school, fake_qbo, 3)
    run(school.pk)
    for record in QboPaymentSync.objects.all():
        make_due(record)
    run(school.pk)

    first, second = batch_calls(fake_qbo)
    assert first.query["requestid"] == second.query["requestid"]
    assert first.body == second.body
    assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 3
    assert {r.status for r in QboPaymentSync.objects.all()} == {SyncStatus.SYNCED}


def test_batch_size_1_sends_every_document_on_its_own(settings, account, school, connection, fake_qbo):
    settings.QBO_SYNC_BATCH_SIZE = 1
    ready_payments(account, school, fake_qbo, 3)
    run(school.pk)
    assert not batch_calls(fake_qbo)
    assert len([r for r in fake_qbo.api_requests(REALM) if r.path.endswith("/salesreceipt")]) == 3


class TestTheFakeRefusesWhatQuickBooksRefuses:
    def post_batch(self, fake_qbo, connection, body: dict, request_id: str | None = None) -> requests.Response:
        params = {"minorversion": "75", **({"requestid": request_id} if request_id else {})}
        return requests.post(
            f"{fake_qbo.base_url}/v3/company/{REALM}/batch",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {connection.access_token}", "Accept": "application/json"},
            timeout=5,
        )

    def item(self, bid: str) -> dict:
        return {"bId": bid, "operation": "create", "Customer": {"DisplayName": f"Customer {bid}"}}

    def test_more_than_30_items_is_fault_1040(self, fake_qbo, connection):
        answer = self.post_batch(fake_qbo, connection, {"BatchItemRequest": [self.item(str(i)) for i in range(31)]})
        assert answer.status_code == 400
        assert answer.json()["Fault"]["Error"][0]["code"] == "1040"
        assert not fake_qbo.objects(REALM, "Customer")

    def test_a_requestid_over_36_characters_or_an_item_id_over_10_is_refused(self, fake_qbo, connection):
        body = {"BatchItemRequest": [self.item("1")]}
        assert self.post_batch(fake_qbo, connection, body, "x" * 37).status_code == 400
        long_id = {"BatchItemRequest": [self.item("12345678901")]}
        assert self.post_batch(fake_qbo, connection, long_id, "y" * 36).status_code == 400
        assert self.post_batch(fake_qbo, connection, long_id).status_code == 200  # no requestid: no limit
        assert self.post_batch(fake_qbo, connection, body, documents.batch_request_id_for(request_ids=["a"])).ok


def test_a_school_without_quickbooks_is_told_apart_by_one_narrow_query(account, school, django_assert_num_queries):
    """Most payments settle at schools that have not connected QuickBooks: the hand-off each
    settlement makes must cost them one small query, not a payment load."""
    payment = ready_payment(account, StudentFactory(school=school))
    with django_assert_num_queries(1) as captured:
        assert services.qbo_sync_request(payment_id=payment.pk) is None
    assert captured.captured_queries[0]["sql"].startswith("SELECT 1 AS")
    assert not QboPaymentSync.objects.exists()
