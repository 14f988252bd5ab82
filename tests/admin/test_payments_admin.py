"""The payments list as staff use it: filters, search, the timeline, mapping a student by hand,
retrying the QuickBooks sync and exporting the filtered list as CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from payments.audit import audit_record
from payments.models import AuditLog, MappingStatus, Payment, ProviderStudentLink, Student, WebhookEvent
from payments.services import payment_student_map
from quickbooks_sync.models import QboPaymentSync
from tests.admin.conftest import make_school_staff
from tests.factories import AccountFactory, PaymentFactory, PaymentSyncFactory, StudentFactory

CHANGELIST = "/admin/payments/payment/"


def listed(client, **params) -> set:
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return {payment.pk for payment in response.context["cl"].result_list}


@pytest.fixture
def school_a(world):
    return world[0]


@pytest.fixture
def account_a(school_a):
    return school_a.rows["provideraccount"]


class TestFiltersAndSearch:
    def test_filters_narrow_the_list_to_exactly_the_matching_payments(self, client_a, account_a, school_a):
        seed = school_a.rows["payment"]  # succeeded, sync failed, mapping pending
        failed = PaymentFactory(account=account_a, status="failed", mapping_status=MappingStatus.UNMATCHED)
        synced = PaymentSyncFactory(payment__account=account_a, status="synced").payment
        dummy = PaymentFactory(account=AccountFactory(school=school_a.school, provider="dummy"), status="pending")
        assert listed(client_a, status__exact="failed") == {failed.pk}
        assert listed(client_a, status__exact="succeeded") == {seed.pk, synced.pk}
        assert listed(client_a, mapping_status__exact="unmatched") == {failed.pk}
        assert listed(client_a, provider__exact="dummy") == {dummy.pk}
        assert listed(client_a, sync="failed") == {seed.pk}
        assert listed(client_a, sync="synced") == {synced.pk}
        assert listed(client_a, sync="none") == {failed.pk, dummy.pk}
        assert listed(client_a, sync="bogus") == set()

    def test_the_date_filter_takes_todays_payments(self, client_a, account_a, school_a):
        old = PaymentFactory(account=account_a)
        Payment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        params = {"created_at__gte": today.isoformat(), "created_at__lt": (today + timedelta(days=1)).isoformat()}
        assert listed(client_a, **params) == {school_a.rows["payment"].pk}

    @pytest.mark.parametrize("field", ["student_number", "provider_student_id", "external_txn_id", "reference"])
    def test_search_finds_a_payment_by_student_transaction_or_reference(self, client_a, account_a, field):
        student = StudentFactory(school=account_a.school, student_number="NG-2024-117")
        wanted = PaymentFactory(
            account=account_a, student=student, provider_student_id="prov-117", external_txn_id="txn-abc-117",
            reference="PAY-117-XYZ",
        )  # fmt: skip
        PaymentFactory(account=account_a)  # noise
        term = {"student_number": "NG-2024-117", "provider_student_id": "prov-117"}.get(field) or getattr(wanted, field)
        assert listed(client_a, q=term) == {wanted.pk}


def test_the_detail_page_shows_the_payments_timeline_in_order(client_a, account_a):
    payment = PaymentFactory(account=account_a, status="succeeded")
    audit_record(action="payment.intent", actor_type="parent", target=payment, school_id=payment.school_id)
    WebhookEvent.objects.create(
        account=account_a, payment=payment, external_event_id="evt-timeline", event_type="charge.succeeded",
        status="processed", result="succeeded",
    )  # fmt: skip
    audit_record(action="payment.mapped", actor_type="staff", actor="bursar-a", target=payment, school_id=payment.school_id)
    audit_record(action="qbo.synced", actor_type="system", actor="quickbooks", target=payment, school_id=payment.school_id,
                 details={"txn_type": "Payment", "txn_id": "84"})  # fmt: skip
    html = client_a.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    timeline = html[html.index('id="timeline"') :]
    # In plain words first; the codes as recorded in the folded table below for engineers.
    words, recorded = timeline.split("for-engineers", 1)
    assert words.index("The parent chose to pay") < words.index("SurePay sent an update (charge.succeeded)")
    assert words.index("SurePay sent an update") < words.index("Matched to student")
    assert "Staff bursar-a" in words
    # Who did it, in words: the service's own parts by name, never "System quickbooks".
    assert "QuickBooks sync" in words and "System quickbooks" not in words
    assert recorded.index("payment.intent") < recorded.index("webhook received: charge.succeeded evt-timeline")
    assert recorded.index("webhook received") < recorded.index("payment.mapped")


class TestMapByHand:
    @pytest.fixture
    def unmatched(self, account_a):
        return PaymentFactory(
            account=account_a, status="succeeded", provider_student_id="prov-999", mapping_status=MappingStatus.UNMATCHED
        )

    def url(self, payment):
        return reverse("admin:payments_payment_map", args=[payment.pk])

    def test_a_new_student_needs_a_name(self, client_a, unmatched):
        response = client_a.post(self.url(unmatched), {"student_number": "AAA-NEW-1", "full_name": ""})
        assert response.status_code == 400
        assert "enter their full name" in response.content.decode()
        unmatched.refresh_from_db()
        assert unmatched.student is None

    def test_mapping_sets_the_student_remembers_the_id_and_offers_the_payment_to_the_books(
        self, client_a, unmatched, staff_a, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = client_a.post(self.url(unmatched), {"student_number": "AAA-NEW-1", "full_name": "Amina N."})
        assert response.status_code == 302
        unmatched.refresh_from_db()
        assert unmatched.student.student_number == "AAA-NEW-1"
        assert unmatched.student.full_name == "Amina N."
        assert unmatched.mapping_status == MappingStatus.MAPPED
        link = ProviderStudentLink.objects.get(provider_student_id="prov-999")
        assert (link.student_id, link.source) == (unmatched.student_id, "staff")
        entry = AuditLog.objects.get(action="payment.mapped", target_id=str(unmatched.pk))
        assert (entry.actor_type, entry.actor, entry.details["previous"]) == ("staff", "bursar-a", "unmatched")
        # The school has a QuickBooks connection (disconnected): the payment waits there for it.
        assert QboPaymentSync.objects.get(payment=unmatched).status == "paused"

        # The next payment from the same provider id maps from the remembered link, no directory.
        later = PaymentFactory(account=unmatched.account, status="succeeded", provider_student_id="prov-999")

        class NoDirectory:
            def lookup_student(self, **kwargs):
                raise AssertionError("the directory was asked")

        assert payment_student_map(payment_id=later.pk, directory=NoDirectory()) == MappingStatus.MAPPED

    def test_an_existing_student_is_found_by_number(self, client_a, unmatched, school_a):
        existing = school_a.rows["student"]
        client_a.post(self.url(unmatched), {"student_number": existing.student_number, "full_name": ""})
        unmatched.refresh_from_db()
        assert unmatched.student_id == existing.pk
        assert Student.objects.filter(school=school_a.school).count() == 1

    def test_a_mapped_payment_cannot_be_remapped(self, client_a, unmatched, school_a):
        Payment.objects.filter(pk=unmatched.pk).update(student=school_a.rows["student"])
        response = client_a.post(self.url(unmatched), {"student_number": "OTHER", "full_name": "Someone"})
        assert "already mapped" in response.content.decode()
        unmatched.refresh_from_db()
        assert unmatched.student_id == school_a.rows["student"].pk

    def test_another_schools_payment_and_view_only_staff_are_refused(self, client, world, unmatched):
        theirs = world[1].rows["payment"]
        client.force_login(make_school_staff("bursar-a2", world[0].school))
        assert client.post(self.url(theirs), {"student_number": "X", "full_name": "Y"}).status_code == 404
        viewer = make_school_staff("viewer", world[0].school)
        viewer.groups.clear()
        viewer.user_permissions.set(Permission.objects.filter(codename="view_payment"))
        client.force_login(viewer)
        assert client.post(self.url(unmatched), {"student_number": "X", "full_name": "Y"}).status_code == 403
        unmatched.refresh_from_db()
        assert unmatched.student is None


def test_retry_sync_queues_a_failed_payment_again_and_says_which_were_not_ready(client_a, school_a):
    seed = school_a.rows["payment"]
    Payment.objects.filter(pk=seed.pk).update(student=school_a.rows["student"], mapping_status=MappingStatus.MAPPED)
    not_ready = PaymentFactory(account=school_a.rows["provideraccount"], status="pending")
    response = client_a.post(
        CHANGELIST, {"action": "retry_quickbooks_sync", "_selected_action": [seed.pk, not_ready.pk]}, follow=True
    )
    text = " ".join(str(message) for message in response.context["messages"])
    assert "1 not ready" in text and "1 paused" in text  # the connection is disconnected: it waits
    assert AuditLog.objects.filter(action="qbo.sync_retry", school=school_a.school, actor="bursar-a").count() == 1
    assert QboPaymentSync.objects.get(payment=seed).status == "paused"


class TestCsvExport:
    def export(self, client, **params) -> list[dict]:
        response = client.get(reverse("admin:payments_payment_export"), params)
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))

    def test_the_export_is_the_filtered_list_with_exact_amounts(self, client_a, account_a, school_a):
        shillings = PaymentFactory(account=account_a, amount_minor=100_050, currency="KES", status="failed")
        rows = self.export(client_a, status__exact="failed")
        assert [row["transaction_id"] for row in rows] == [shillings.external_txn_id]
        assert (rows[0]["amount"], rows[0]["amount_minor"], rows[0]["currency"]) == ("1000.50", "100050", "KES")
        assert {row["transaction_id"] for row in self.export(client_a)} == {
            shillings.external_txn_id, school_a.rows["payment"].external_txn_id,
        }  # fmt: skip
        assert AuditLog.objects.filter(action="payments.exported", actor="bursar-a").count() == 2

    def test_the_export_never_includes_another_school(self, client_a, world):
        rows = self.export(client_a, school=world[1].school.pk)
        assert rows == []
        rows = self.export(client_a, q=world[1].rows["payment"].external_txn_id)
        assert rows == []

    def test_a_payer_supplied_value_cannot_become_a_spreadsheet_formula(self, client_a, account_a):
        PaymentFactory(account=account_a, provider_student_id='=HYPERLINK("http://evil","x")', status="failed")
        (row,) = self.export(client_a, status__exact="failed")
        assert row["provider_student_id"] == "'=HYPERLINK(\"http://evil\",\"x\")"

    def test_a_broken_filter_sends_staff_back_to_the_list(self, client_a):
        response = client_a.get(reverse("admin:payments_payment_export"), {"created_at__gte": "not a date"})
        assert response.status_code == 302
        assert response["Location"] == CHANGELIST + "?e=1"

    def test_the_list_links_the_export_with_its_own_filters(self, client_a):
        html = client_a.get(CHANGELIST, {"status__exact": "failed"}).content.decode()
        assert 'href="/admin/payments/payment/export/?status__exact=failed"' in html
