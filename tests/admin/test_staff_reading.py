"""What a bursar reads in admin: times in the school's zone, plain words, the product's name,
finding a payment by name, reference or amount, the export's columns, one school chosen for its
staff, the student autocomplete, and a payment's page that cannot be saved over."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.status import PaymentStatus
from core.timezones import validate_time_zone
from dashboard.selectors import staff_dashboard
from payments.audit import audit_record
from payments.models import AuditLog, Payment, School
from tests.admin.conftest import make_school_staff
from tests.factories import (
    AccountFactory,
    PaymentFactory,
    PaymentRequestFactory,
    PaymentSyncFactory,
    SchoolFactory,
    StudentFactory,
    report,
)

CHANGELIST = "/admin/payments/payment/"
UTC = dt_timezone.utc


def listed(client, **params) -> set:
    response = client.get(CHANGELIST, params)
    assert response.status_code == 200
    return {payment.pk for payment in response.context["cl"].result_list}


@pytest.fixture
def kampala(world):
    school = world[0].school
    School.objects.filter(pk=school.pk).update(time_zone="Africa/Kampala")
    school.refresh_from_db()
    return world[0]


# --- Time zones ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["EAT", "+03:00", "Africa/Kampla", "", "africa/kampala"])
def test_a_time_zone_is_an_iana_name(name):
    with pytest.raises(ValidationError):
        validate_time_zone(name)
    validate_time_zone("Africa/Kampala")


def test_a_new_school_takes_the_configured_zone_and_refuses_a_bad_one(db, settings):
    settings.SCHOOL_TIME_ZONE = "Africa/Nairobi"
    school = School.objects.create(code="kis", name="Kisumu", currency="KES")
    assert school.time_zone == "Africa/Nairobi"
    school.time_zone = "Nairobi"
    with pytest.raises(ValidationError) as refused:
        school.full_clean()
    assert "time_zone" in refused.value.message_dict


def test_the_list_and_the_page_show_the_schools_time(client_a, kampala):
    payment = kampala.rows["payment"]
    at = datetime(2026, 12, 4, 19, 15, tzinfo=UTC)  # 22:15 in Kampala
    Payment.objects.filter(pk=payment.pk).update(created_at=at, settled_at=at)
    html = client_a.get(CHANGELIST).content.decode()
    assert '<time datetime="2026-12-04T22:15:00+03:00">2026-12-04 22:15 EAT</time>' in html
    page = client_a.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    assert "2026-12-04 22:15 EAT" in page
    assert "19:15" not in page.split('id="summary"')[1].split("</dl>")[0]


def test_today_on_the_dashboard_is_the_schools_day(kampala, staff_a):
    account = kampala.rows["provideraccount"]
    now = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)  # 09:00 on 5 December in Kampala
    late_last_night_utc = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)  # 01:30 on 5 December in Kampala
    before_kampala_midnight = datetime(2026, 12, 4, 20, 59, tzinfo=UTC)  # 23:59 on 4 December there
    for at, amount in ((late_last_night_utc, 70_000), (before_kampala_midnight, 5_000)):
        payment = PaymentFactory(account=account, status="succeeded", amount_minor=amount)
        Payment.objects.filter(pk=payment.pk).update(settled_at=at)
    Payment.objects.filter(pk=kampala.rows["payment"].pk).update(settled_at=before_kampala_midnight)
    board = staff_dashboard(user=staff_a, now=now)
    day = board.days[kampala.school.pk]
    assert (day.day.isoformat(), day.start.isoformat()) == ("2026-12-05", "2026-12-05T00:00:00+03:00")
    assert [(row.provider, row.count, row.amount_minor) for row in board.totals] == [("surepay", 1, 70_000)]


def test_staff_of_schools_in_two_zones_see_each_schools_day(client, world):
    School.objects.filter(pk=world[0].school.pk).update(time_zone="Africa/Kampala")
    School.objects.filter(pk=world[1].school.pk).update(time_zone="America/Los_Angeles")
    both = make_school_staff("bursar-ab", world[0].school, world[1].school)
    client.force_login(both)
    html = client.get(reverse("admin-dashboard")).content.decode()
    assert "Today, in each school&#x27;s time zone" in html
    takings = html[html.index('id="takings"') : html.index('id="queues"')]
    assert "<th>School</th>" in takings and "<th>Its today</th>" in takings
    assert "<td>aaa</td>" in takings and "<td>bbb</td>" in takings


def test_the_export_has_iso_times_with_the_offset_and_the_parents_words(client_a, kampala):
    request = PaymentRequestFactory(school=kampala.school, student=kampala.rows["student"], description="Bus fees")
    payment = PaymentFactory(
        account=kampala.rows["provideraccount"], status="awaiting_review", method="bank_transfer",
        manual_reference="STANBIC 0042", payment_request=request,
    )  # fmt: skip
    Payment.objects.filter(pk=payment.pk).update(created_at=datetime(2026, 12, 4, 19, 15, tzinfo=UTC))
    response = client_a.get(reverse("admin:payments_payment_export"), {"status__exact": "awaiting_review"})
    (row,) = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert row["created_at"] == "2026-12-04T22:15:00+03:00"
    assert (row["parent_reference"], row["description"], row["request"]) == ("STANBIC 0042", "Bus fees", str(request.pk))


# --- Wording ---------------------------------------------------------------------------------------


def test_the_header_has_the_products_name_and_no_django_wording(client_a):
    html = client_a.get(reverse("admin:index")).content.decode()
    assert "school-payments" in html and "Django administration" not in html
    assert "Provider accounts" in html


def test_the_list_says_provider_names_and_no_none(client_a, world):
    html = client_a.get(CHANGELIST).content.decode()
    assert "SurePay" in html and ">surepay<" not in html
    assert ">None<" not in html


def test_a_payments_page_reads_in_plain_words(client_a, world):
    payment = PaymentFactory(account=world[0].rows["provideraccount"], amount_minor=450_000)
    report(payment, status=PaymentStatus.SUCCEEDED)
    report(payment, status=PaymentStatus.SUCCEEDED)  # the provider says it again
    sync = PaymentSyncFactory(payment=payment, status="synced", txn_type="Payment", txn_id="84",
                              details={"applied": [{"invoice_id": "7", "doc_number": "1002", "amount": "450000"}]})  # fmt: skip
    audit_record(
        action="qbo.synced", actor_type=AuditLog.ActorType.SYSTEM, actor="qbo", school_id=payment.school_id,
        target=payment, details={"kind": "payment", "txn_type": "Payment", "txn_id": "84",
                                 "applied": sync.details["applied"]},
    )  # fmt: skip
    html = client_a.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    summary = html[html.index('id="summary"') : html.index('id="timeline"')]
    for words in ("UGX 450,000", "Succeeded", "SurePay",
                  "Recorded as", "payment 84", "on invoice 1002", "app.sandbox.qbo.intuit.com/app/recvpayment?txnId=84"):  # fmt: skip
        assert words in summary, words
    timeline = html[html.index('id="timeline"') : html.index("for-engineers")]
    assert "Paid UGX 450,000 by SurePay" in timeline
    assert "SurePay said the same again (nothing changed)" in timeline
    assert "Recorded in QuickBooks as payment 84 on invoice 1002" in timeline
    assert "payment.webhook" not in timeline and "qbo.synced" not in timeline  # the codes are folded away
    assert 'name="_save"' not in html  # nothing to save


def test_a_payments_page_cannot_be_saved_over(client_a, world):
    payment = world[0].rows["payment"]
    url = reverse("admin:payments_payment_change", args=[payment.pk])
    response = client_a.post(url, {"status": "refunded", "amount_minor": "1"})
    assert (response.status_code, response["Allow"], response.content) == (405, "GET", b"")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_minor) == ("succeeded", 100_000)


def test_what_needs_doing_is_said_at_the_top(client_a, world):
    payment = PaymentFactory(account=world[0].rows["provideraccount"], status="awaiting_review", method="bank_transfer")
    html = client_a.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    todo = html[html.index('id="todo"') : html.index('id="timeline"') if 'id="timeline"' in html else None]
    assert "confirm or reject" in todo and reverse("admin:payments_payment_review", args=[payment.pk]) in todo


# --- Finding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["450,000", "450000", "UGX 450,000", "Nakato", "STANBIC 0042", "Bus fees"])
def test_a_payment_is_found_as_a_bursar_writes_it(client_a, world, term):
    student = StudentFactory(school=world[0].school, student_number="STU-0001", full_name="Amina Nakato")
    request = PaymentRequestFactory(school=world[0].school, student=student, description="Bus fees")
    wanted = PaymentFactory(
        account=world[0].rows["provideraccount"], amount_minor=450_000, status="awaiting_review",
        method="bank_transfer", manual_reference="STANBIC 0042", payment_request=request,
    )  # fmt: skip
    assert listed(client_a, q=term) == {wanted.pk}


def test_an_amount_search_is_exact_in_the_currencys_units(client_a, world):
    account = AccountFactory(school=world[0].school, provider="stripe")
    shillings = PaymentFactory(account=account, amount_minor=150_050, currency="KES")
    PaymentFactory(account=account, amount_minor=150_000, currency="KES")
    assert listed(client_a, q="1,500.50") == {shillings.pk}
    assert listed(client_a, q="1,500.505") == set()  # too many decimals for every currency here


def test_a_request_is_found_by_its_amount(client_a, world):
    wanted = PaymentRequestFactory(school=world[0].school, student=world[0].rows["student"], amount_minor=1_250_000)
    response = client_a.get(reverse("admin:payments_paymentrequest_changelist"), {"q": "1,250,000"})
    assert {row.pk for row in response.context["cl"].result_list} == {wanted.pk}


def test_one_schools_staff_never_pick_the_school(client_a, world):
    html = client_a.get(reverse("admin:payments_paymentrequest_add")).content.decode()
    assert f'<input type="hidden" name="school" value="{world[0].school.pk}"' in html
    html = client_a.get(reverse("admin:payments_paymentrequest_import")).content.decode()
    assert f'<input type="hidden" name="school" value="{world[0].school.pk}"' in html
    assert "School:</label>" not in html
    html = client_a.get(reverse("admin:payments_provideraccount_add")).content.decode()
    assert f'<input type="hidden" name="school" value="{world[0].school.pk}"' in html


def test_a_forged_school_on_a_hidden_field_is_refused_in_words(client_a, world):
    page = client_a.post(reverse("admin:payments_paymentrequest_import"), {"school": world[1].school.pk})
    assert page.status_code == 200
    assert "School: Select a valid choice." in page.content.decode()


def test_staff_of_two_schools_pick_one(client, world):
    client.force_login(make_school_staff("bursar-ab", world[0].school, world[1].school))
    html = client.get(reverse("admin:payments_paymentrequest_add")).content.decode()
    assert '<select name="school"' in html


def test_the_student_is_an_autocomplete_over_the_users_school(client_a, world):
    StudentFactory(school=world[0].school, student_number="AAA-2", full_name="Amina Nakato")
    StudentFactory(school=world[1].school, student_number="BBB-2", full_name="Amina Wanjiru")
    html = client_a.get(reverse("admin:payments_paymentrequest_add")).content.decode()
    assert 'class="admin-autocomplete' in html and 'data-field-name="student"' in html
    response = client_a.get(
        reverse("admin:autocomplete"),
        {"term": "Amina", "app_label": "payments", "model_name": "paymentrequest", "field_name": "student"},
    )
    assert response.status_code == 200
    assert [result["text"] for result in response.json()["results"]] == ["AAA-2 Amina Nakato"]


def test_a_request_is_created_with_the_chosen_student(client_a, world):
    student = world[0].rows["student"]
    response = client_a.post(
        reverse("admin:payments_paymentrequest_add"),
        {"school": world[0].school.pk, "student": student.pk, "description": "Bus", "amount": "120,000", "currency": ""},
    )
    assert response.status_code == 302
    assert world[0].school.payment_requests.get(description="Bus").student == student


def test_the_request_list_shows_whole_amounts_and_the_due_date(client_a, world):
    PaymentRequestFactory(school=world[0].school, student=world[0].rows["student"], amount_minor=1_250_000,
                          due_date=datetime(2027, 1, 15).date())  # fmt: skip
    html = client_a.get(reverse("admin:payments_paymentrequest_changelist")).content.decode()
    assert '<span class="amount">UGX 1,250,000</span>' in html and "15 Jan 2027" in html


def test_django_renders_times_in_the_zone_of_a_staff_members_schools(client_a, kampala):
    payment = kampala.rows["payment"]
    Payment.objects.filter(pk=payment.pk).update(created_at=datetime(2026, 12, 4, 19, 15, tzinfo=UTC))
    html = client_a.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    engineers = html[html.index("Details for engineers") :]
    assert "Dec. 4, 2026, 10:15 p.m." in engineers  # a read-only field, rendered by Django itself
    assert "Africa/Kampala" in client_a.get(reverse("admin:payments_school_change", args=[kampala.school.pk])).content.decode()


def test_a_parent_reads_the_time_in_the_schools_zone(client, kampala):
    request = PaymentRequestFactory(school=kampala.school, student=kampala.rows["student"])
    payment = PaymentFactory(account=kampala.rows["provideraccount"], payment_request=request, status="awaiting_review",
                             method="bank_transfer")  # fmt: skip
    # 22:30 UTC on 4 December is 01:30 on 5 December in Kampala: the parent reported it on the 5th.
    Payment.objects.filter(pk=payment.pk).update(created_at=datetime(2026, 12, 4, 22, 30, tzinfo=UTC))
    page = client.get(f"/pay/{request.token}/").content.decode()
    assert "You reported a bank transfer of UGX 100,000 on 5 December 2026" in page


def test_the_review_page_says_when_in_school_time(client_a, kampala):
    payment = PaymentFactory(account=kampala.rows["provideraccount"], status="awaiting_review", method="bank_transfer")
    Payment.objects.filter(pk=payment.pk).update(created_at=datetime(2026, 12, 4, 19, 15, tzinfo=UTC))
    page = client_a.get(reverse("admin:payments_payment_review", args=[payment.pk])).content.decode()
    assert "2026-12-04 22:15 EAT" in page


def test_the_autocomplete_narrows_to_the_chosen_school(client, world):
    StudentFactory(school=world[0].school, student_number="AAA-2", full_name="Amina Nakato")
    StudentFactory(school=world[1].school, student_number="BBB-2", full_name="Amina Wanjiru")
    outsider = SchoolFactory(code="ccc")
    StudentFactory(school=outsider, student_number="CCC-2", full_name="Amina Outside")
    client.force_login(make_school_staff("bursar-ab", world[0].school, world[1].school))
    query = {"term": "Amina", "app_label": "payments", "model_name": "paymentrequest", "field_name": "student"}

    def found(**extra):
        response = client.get(reverse("admin:autocomplete"), {**query, **extra})
        assert response.status_code == 200
        return [result["text"] for result in response.json()["results"]]

    assert found() == ["AAA-2 Amina Nakato", "BBB-2 Amina Wanjiru"]  # the user's schools, never another
    assert found(school=world[1].school.pk) == ["BBB-2 Amina Wanjiru"]
    assert found(school=outsider.pk) == []  # not one of theirs: nothing, not that school's students
    assert found(school="1 OR 1=1") == [] and found(school="9" * 40) == []
