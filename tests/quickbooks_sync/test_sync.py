"""A ready payment reaches the fake QuickBooks exactly once, with the exact amount: a Payment
applied to the student's oldest open invoices, or a SalesReceipt; refunds as RefundReceipts.
python-quickbooks runs unpatched over a socket; every request is asserted as sent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.status import PaymentStatus
from payments.models import AuditLog
from quickbooks_sync import services
from quickbooks_sync.documents import marker_for, request_id_for
from quickbooks_sync.models import QboAdjustmentSync, QboCustomer, QboPaymentSync, SyncStatus
from tests.factories import AccountFactory, SchoolFactory, StudentFactory, report
from tests.quickbooks_sync.conftest import REALM, customer_for, ready_payment

pytestmark = pytest.mark.django_db


def sync(payment) -> QboPaymentSync:
    services.qbo_sync_request(payment_id=payment.pk)
    services.qbo_school_sync(school_id=payment.school_id)
    return QboPaymentSync.objects.get(payment=payment)


def creates(fake, entity: str):
    return [r for r in fake.api_requests(REALM) if r.method == "POST" and r.path.endswith(f"/{entity.lower()}")]


class TestInvoicePayment:
    def test_applied_to_the_oldest_open_invoices_up_to_the_amount(self, account, student, connection, fake_qbo):
        customer = customer_for(fake_qbo, "Amina Nakato (STU-0001)")
        newer = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=80_000, txn_date="2025-03-01")
        oldest = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=50_000, txn_date="2025-01-10")
        newest = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=90_000, txn_date="2025-06-01")
        payment = ready_payment(account, student, 100_000, external_txn_id="txn-123")

        record = sync(payment)

        assert (record.status, record.txn_type, record.attempts, record.in_doubt) == (
            SyncStatus.SYNCED,
            "Payment",
            1,
            False,
        )
        (stored,) = fake_qbo.objects(REALM, "Payment")
        assert record.txn_id == stored["Id"]
        (request,) = creates(fake_qbo, "Payment")
        assert request.query == {
            "minorversion": ["75"],
            "requestid": [request_id_for(realm_id=REALM, kind="payment", payment_id=payment.pk)],
        }
        assert request.headers["Authorization"] == f"Bearer {connection.access_token}"
        body = request.json()
        assert body == {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": "100000",
            "TxnDate": record.txn_date.isoformat(),
            "Line": [
                {"Amount": "50000", "LinkedTxn": [{"TxnId": oldest["Id"], "TxnType": "Invoice"}]},
                {"Amount": "50000", "LinkedTxn": [{"TxnId": newer["Id"], "TxnType": "Invoice"}]},
            ],
            "DepositToAccountRef": {"value": "35"},
            "PaymentRefNum": "txn-123",
            "PrivateNote": f"surepay txn-123: UGX 100,000 for Amina Nakato (STU-0001) [sp:{payment.pk}]",
        }
        balances = {inv["Id"]: inv["Balance"] for inv in fake_qbo.objects(REALM, "Invoice")}
        assert balances == {oldest["Id"]: 0, newer["Id"]: 30_000, newest["Id"]: 90_000}
        assert record.details == {
            "applied": [
                {"invoice_id": oldest["Id"], "doc_number": "", "amount": "50000"},
                {"invoice_id": newer["Id"], "doc_number": "", "amount": "50000"},
            ],
            "unapplied": "0",
        }
        audit = AuditLog.objects.get(action="qbo.synced")
        assert audit.target_id == str(payment.pk)
        assert audit.details["txn_type"] == "Payment" and audit.details["txn_id"] == stored["Id"]
        assert audit.details["amount_minor"] == 100_000 and audit.details["via"] == "create"

    def test_a_remainder_stays_unapplied_on_the_payment(self, account, student, connection, fake_qbo):
        customer = customer_for(fake_qbo, "Amina Nakato (STU-0001)")
        invoice = fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=30_000)
        record = sync(ready_payment(account, student, 100_000))
        (stored,) = fake_qbo.objects(REALM, "Payment")
        assert (stored["TotalAmt"], stored["UnappliedAmt"]) == (100_000, 70_000)
        assert stored["Line"] == [{"Amount": 30_000, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]
        assert record.details["unapplied"] == "70000"

    def test_decimal_currencies_are_exact(self, connection, fake_qbo):
        school = SchoolFactory(code="ke", currency="KES")
        account = AccountFactory(school=school)
        fake_qbo.companies[REALM].home_currency = "KES"
        connection.school, connection.home_currency = school, "KES"
        connection.save()
        student = StudentFactory(school=school, student_number="K-1", full_name="Wanjiru Kamau")
        customer = customer_for(fake_qbo, "Wanjiru Kamau (K-1)")
        fake_qbo.add_invoice(REALM, customer_id=customer["Id"], amount=Decimal("1000.10"), currency="KES")
        record = sync(ready_payment(account, student, 100_050, currency="KES"))  # KES 1,000.50
        body = creates(fake_qbo, "Payment")[0].json()
        assert (body["TotalAmt"], body["Line"][0]["Amount"]) == ("1000.50", "1000.10")
        (stored,) = fake_qbo.objects(REALM, "Payment")
        assert (stored["TotalAmt"], stored["UnappliedAmt"]) == (Decimal("1000.50"), Decimal("0.40"))
        assert record.status == SyncStatus.SYNCED


class TestSalesReceipt:
    def test_without_an_open_invoice_a_sales_receipt_with_the_chosen_item(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student, 100_000, external_txn_id="txn-9")
        record = sync(payment)
        assert (record.status, record.txn_type) == (SyncStatus.SYNCED, "SalesReceipt")
        (customer,) = fake_qbo.objects(REALM, "Customer")
        assert customer["DisplayName"] == "Amina Nakato (STU-0001)"
        assert QboCustomer.objects.get().customer_id == customer["Id"]
        (request,) = creates(fake_qbo, "SalesReceipt")
        assert request.json() == {
            "CustomerRef": {"value": customer["Id"]},
            "TxnDate": record.txn_date.isoformat(),
            "Line": [
                {
                    "Amount": "100000",
                    "DetailType": "SalesItemLineDetail",
                    "Description": "School fees for Amina Nakato (STU-0001), paid via surepay (txn-9)",
                    "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": "100000"},
                }
            ],
            "DepositToAccountRef": {"value": "35"},
            "PaymentRefNum": "txn-9",
            "PrivateNote": f"surepay txn-9: UGX 100,000 for Amina Nakato (STU-0001) [sp:{payment.pk}]",
        }
        (receipt,) = fake_qbo.objects(REALM, "SalesReceipt")
        assert (record.txn_id, receipt["TotalAmt"]) == (receipt["Id"], 100_000)


class TestExactlyOnce:
    def test_syncing_again_sends_nothing(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student)
        sync(payment)
        before = len(fake_qbo.api_requests(REALM))
        assert services.qbo_sync_request(payment_id=payment.pk) == SyncStatus.SYNCED
        assert services.qbo_school_sync(school_id=payment.school_id) == "idle"
        assert len(fake_qbo.api_requests(REALM)) == before
        assert len(fake_qbo.objects(REALM, "SalesReceipt")) == 1
        assert AuditLog.objects.filter(action="qbo.synced").count() == 1

    def test_a_payment_not_ready_is_not_synced(self, account, student, connection, fake_qbo):
        pending = ready_payment(account, student, status=PaymentStatus.PENDING)
        unmatched = ready_payment(account, None, mapping_status="unmatched")
        for payment in (pending, unmatched):
            assert services.qbo_sync_request(payment_id=payment.pk) is None
        assert not QboPaymentSync.objects.exists()

    def test_a_school_without_quickbooks_costs_one_query(self, account, student, django_assert_num_queries):
        payment = ready_payment(account, student)
        with django_assert_num_queries(1):
            assert services.qbo_sync_request(payment_id=payment.pk) is None


class TestRefunds:
    def test_each_refund_becomes_a_refund_receipt_of_its_amount(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student, 100_000, external_txn_id="txn-r")
        record = sync(payment)
        report(payment, refunds=[("re_1", 40_000)])
        sync(payment)
        report(payment, refunds=[("re_2", 60_000)])
        sync(payment)

        steps = list(
            QboAdjustmentSync.objects.order_by("movement").values_list("movement", "direction", "amount_minor", "status")
        )
        assert steps == [
            ("refund:re_1", "out", 40_000, SyncStatus.SYNCED),
            ("refund:re_2", "out", 60_000, SyncStatus.SYNCED),
        ]
        receipts = fake_qbo.objects(REALM, "RefundReceipt")
        assert [r["TotalAmt"] for r in receipts] == [40_000, 60_000]
        first = creates(fake_qbo, "RefundReceipt")[0]
        assert first.query["requestid"] == [
            request_id_for(realm_id=REALM, kind="adjustment", payment_id=payment.pk, step="refund:re_1#0")
        ]
        body = first.json()
        assert body["DepositToAccountRef"] == {"value": "35"}
        assert body["CustomerRef"] == {"value": record.customer_id}
        assert body["Line"][0]["SalesItemLineDetail"] == {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": "40000"}
        assert marker_for(kind="adjustment", payment_id=payment.pk, step="refund:re_1#0") in body["PrivateNote"]
        assert f"SalesReceipt {record.txn_id}" in body["PrivateNote"]
        assert AuditLog.objects.filter(action="qbo.synced", details__kind="refund").count() == 2

    def test_the_same_refund_reported_twice_and_as_a_total_is_booked_once(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student, 100_000, external_txn_id="txn-r")
        sync(payment)
        report(payment, refunds=[("re_1", 40_000)])
        report(payment, refunds=[("re_1", 40_000)], refunded_total_minor=40_000)
        sync(payment)
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "RefundReceipt")] == [40_000]

    def test_a_refund_that_fails_after_it_was_booked_is_booked_back(self, account, student, connection, fake_qbo):
        payment = ready_payment(account, student, 100_000, external_txn_id="txn-r")
        sync(payment)
        report(payment, refunds=[("re_1", 40_000)])
        sync(payment)
        report(payment, refunds=[("re_1", 40_000, "failed")])
        sync(payment)
        assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.SUCCEEDED, 0)
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "RefundReceipt")] == [40_000]
        # The money came back: a SalesReceipt of it, so the documents add up to the net again.
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "SalesReceipt")] == [100_000, 40_000]

    def test_a_payment_refunded_before_its_first_sync_is_posted_then_refunded(
        self, account, student, connection, fake_qbo
    ):
        payment = ready_payment(account, student, 100_000, status=PaymentStatus.REFUNDED, refunded_amount_minor=100_000)
        services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=payment.school_id)
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "SalesReceipt")] == [100_000]
        assert [r["TotalAmt"] for r in fake_qbo.objects(REALM, "RefundReceipt")] == [100_000]


class TestCustomers:
    def test_known_customers_are_found_by_name_and_new_ones_batch_created(self, account, connection, fake_qbo, school):
        existing = customer_for(fake_qbo, "Brian Okello (STU-0002)")
        students = [
            StudentFactory(school=school, student_number="STU-0002", full_name="Brian Okello"),
            StudentFactory(school=school, student_number="STU-0003", full_name="Grace: Atim"),
            StudentFactory(school=school, student_number="STU-0004", full_name="O'Neil Kato"),
        ]
        payments = [ready_payment(account, s) for s in students]
        for payment in payments:
            services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=school.pk)

        assert set(QboPaymentSync.objects.values_list("status", flat=True)) == {SyncStatus.SYNCED}
        names = {c["DisplayName"]: c["Id"] for c in fake_qbo.objects(REALM, "Customer")}
        assert set(names) == {"Brian Okello (STU-0002)", "Grace Atim (STU-0003)", "O'Neil Kato (STU-0004)"}
        assert dict(QboCustomer.objects.values_list("display_name", "customer_id")) == names
        assert names["Brian Okello (STU-0002)"] == existing["Id"]
        queries = [r.body.decode() for r in fake_qbo.api_requests(REALM) if r.path.endswith("/query")]
        assert queries[0] == (
            "SELECT * FROM Customer WHERE DisplayName IN ('Brian Okello (STU-0002)', 'Grace Atim (STU-0003)', "
            "'O\\'Neil Kato (STU-0004)') MAXRESULTS 1000"
        )
        (batch,) = [
            r
            for r in fake_qbo.api_requests(REALM)
            if r.path.endswith("/batch") and "Customer" in r.json()["BatchItemRequest"][0]
        ]
        items = batch.json()["BatchItemRequest"]
        assert [(i["operation"], i["Customer"]["DisplayName"]) for i in items] == [
            ("create", "Grace Atim (STU-0003)"),
            ("create", "O'Neil Kato (STU-0004)"),
        ]

    def test_a_round_costs_one_invoice_query_and_one_batch_of_its_payments(self, account, connection, fake_qbo, school):
        students = [StudentFactory(school=school) for _ in range(10)]
        for s in students:
            c = customer_for(fake_qbo, f"{s.full_name} ({s.student_number})")
            QboCustomer.objects.create(
                school=school, realm_id=REALM, student=s, customer_id=c["Id"], display_name=c["DisplayName"]
            )
            fake_qbo.add_invoice(REALM, customer_id=c["Id"], amount=50_000)
        payments = [ready_payment(account, s, 70_000) for s in students]
        for payment in payments:
            services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=school.pk)
        requests = fake_qbo.api_requests(REALM)
        assert [r.path.rsplit("/", 1)[-1] for r in requests] == ["query", "batch"]
        items = requests[1].json()["BatchItemRequest"]
        assert [item["operation"] for item in items] == ["create"] * 10
        assert all(item["Payment"]["TotalAmt"] == "70000" for item in items)
        assert len(fake_qbo.objects(REALM, "Payment")) == 10
        assert set(QboPaymentSync.objects.values_list("status", flat=True)) == {SyncStatus.SYNCED}
