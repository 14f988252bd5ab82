"""Payment requests: what staff type (admin, API, one CSV row) is checked strictly; a CSV upload
is checked row by row and imported all together or not at all."""

from datetime import date

import pytest

from payments import services
from payments.models import AuditLog, PaymentRequest
from tests.factories import PaymentRequestFactory, StudentFactory
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def students(school):
    return [
        StudentFactory(school=school, student_number=number, full_name=name)
        for number, name in (("STU-0001", "Amina Nakato"), ("STU-0002", "Brian Okello"), ("STU-0003", "Grace Atim"))
    ]


def draft(school, **fields):
    values = {"student_number": "STU-0001", "description": "Term 1 fees", "amount": "450,000", **fields}
    return services.payment_request_draft(school=school, **values)


def test_a_draft_parses_the_amount_strictly_for_the_currency(school, students):
    assert draft(school).amount_minor == 450_000
    assert draft(school, amount="1,500.50", currency="kes").amount_minor == 150_050
    assert draft(school, amount=None, amount_minor=99).amount_minor == 99
    assert draft(school, due_date="2026-02-01").due_date == date(2026, 2, 1)
    assert draft(school, currency="").currency == "UGX"


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"amount": "450,000.5"}, {"amount": "amount '450,000.5' has decimals but UGX has no minor unit"}),
        ({"amount": "1,500.505", "currency": "KES"}, {"amount": "amount '1,500.505' has more decimals than KES allows (2)"}),
        ({"amount": "45,0000"}, {"amount": "amount '45,0000' is not a plain positive number"}),
        ({"amount": "-5"}, {"amount": "amount '-5' is not a plain positive number"}),
        ({"amount": "0"}, {"amount": "Must be greater than zero."}),
        ({"amount": ""}, {"amount": "This field is required."}),
        ({"amount": "5", "amount_minor": 5}, {"amount": "Give the amount (major units) or amount_minor, not both."}),
        ({"currency": "XYZ"}, {"currency": "unknown currency 'XYZ'"}),
        ({"student_number": "STU-9999"}, {"student_id": "Unknown student 'STU-9999' at ng."}),
        ({"description": " "}, {"description": "This field is required."}),
        ({"description": "x" * 201}, {"description": "At most 200 characters."}),
        ({"due_date": "31/01/2026"}, {"due_date": "'31/01/2026' is not a date (YYYY-MM-DD)."}),
    ],
)
def test_a_draft_says_everything_that_is_wrong(school, students, fields, errors):
    with pytest.raises(services.PaymentRequestInvalid) as invalid:
        draft(school, **fields)
    assert invalid.value.errors == errors


def test_a_student_of_another_school_is_unknown_here(school, students, other_school):
    StudentFactory(school=other_school, student_number="KLA-1")
    with pytest.raises(services.PaymentRequestInvalid) as invalid:
        draft(school, student_number="KLA-1")
    assert invalid.value.errors == {"student_id": "Unknown student 'KLA-1' at ng."}


def test_creating_a_request_gives_it_an_unguessable_token_and_an_audit_entry(school, students, staff):
    first = services.payment_request_create(school=school, draft=draft(school), actor=staff)
    second = services.payment_request_create(school=school, draft=draft(school), actor=staff)
    assert first.token != second.token
    assert len(first.token) >= 32 and all(c.isalnum() or c in "-_" for c in first.token)
    assert first.pay_url == f"https://pay.example.org/pay/{first.token}/"
    entry = AuditLog.objects.filter(action="payment_request.created").first()
    assert (entry.actor_type, entry.actor) == ("staff", "bursar")
    assert entry.details == {"student_number": "STU-0001", "amount_minor": 450_000, "currency": "UGX", "source": "staff"}


def test_cancelling(school, students, staff):
    payment_request = PaymentRequestFactory(school=school, student=students[0])
    services.payment_request_cancel(payment_request_id=payment_request.pk, actor=staff)
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.CANCELLED
    assert AuditLog.objects.filter(action="payment_request.cancelled").count() == 1


# --- CSV ----------------------------------------------------------------------------------------------

GOOD_CSV = (
    "student_id,description,amount,currency,due_date\n"
    'STU-0001,Term 1 fees,"450,000",UGX,2026-02-01\n'
    "STU-0002,Bus fees,120000,,\n"
    "\n"
    "STU-0003,Lunch (Term 1),\"75,500\",UGX,2026-02-15\n"
)


def test_a_good_csv_is_imported_whole(school, students, staff):
    result = services.payment_requests_import_csv(school=school, data=("\ufeff" + GOOD_CSV).encode(), actor=staff)
    assert result.errors == []
    assert [(r.student.student_number, r.description, r.amount_minor, r.currency, r.due_date) for r in result.created] == [
        ("STU-0001", "Term 1 fees", 450_000, "UGX", date(2026, 2, 1)),
        ("STU-0002", "Bus fees", 120_000, "UGX", None),
        ("STU-0003", "Lunch (Term 1)", 75_500, "UGX", date(2026, 2, 15)),
    ]
    assert PaymentRequest.objects.count() == 3
    assert AuditLog.objects.filter(action="payment_request.created", details__source="csv").count() == 3


def test_one_bad_row_imports_nothing_and_every_error_is_reported_with_its_line(school, students, staff):
    data = (
        "Student_ID,Description,Amount,Currency,Due_Date\n"
        "STU-0001,Term 1 fees,450000,UGX,2026-02-01\n"
        "STU-0404,Term 1 fees,450000,UGX,2026-02-01\n"
        "STU-0002,,450000.50,UGX,01-02-2026\n"
        "STU-0003,Trip,12,XXX,\n"
        "STU-0003,Trip,12,UGX,,extra\n"
    ).encode()
    result = services.payment_requests_import_csv(school=school, data=data, actor=staff)
    assert result.created == []
    assert PaymentRequest.objects.count() == 0
    assert [(e.line, e.field, e.message) for e in result.errors] == [
        (3, "student_id", "Unknown student 'STU-0404' at ng."),
        (4, "description", "This field is required."),
        (4, "amount", "amount '450000.50' has decimals but UGX has no minor unit"),
        (4, "due_date", "'01-02-2026' is not a date (YYYY-MM-DD)."),
        (5, "currency", "unknown currency 'XXX'"),
        (6, "(row)", "More values than columns."),
    ]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"student,desc,amount\nSTU-0001,x,1\n", (1, "(header)", "Missing column(s): student_id, description. Expected: student_id, description, amount, currency, due_date, parent_email, parent_phone.")),
        (b"student_id,description,amount\n", (0, "(file)", "The file has no rows.")),
        (b"\xff\xfes\x00t\x00", (0, "(file)", "The file is not UTF-8 text. Save it as CSV UTF-8.")),
    ],
)
def test_a_file_that_is_not_a_usable_csv(school, students, data, error):
    result = services.payment_requests_import_csv(school=school, data=data)
    assert [(e.line, e.field, e.message) for e in result.errors] == [error]
    assert PaymentRequest.objects.count() == 0


def test_the_admin_upload_shows_errors_per_row(client, school, students, staff):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(staff)
    changelist = client.get("/admin/payments/paymentrequest/").content.decode()
    assert 'href="/admin/payments/paymentrequest/import/">Import from CSV</a>' in changelist
    bad = SimpleUploadedFile("fees.csv", b"student_id,description,amount\nSTU-0001,Fees,abc\n", content_type="text/csv")
    response = client.post("/admin/payments/paymentrequest/import/", {"school": school.pk, "file": bad})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was imported: 1 problem in 1 row." in html
    assert "<tr><td>2</td><td>amount</td><td>amount &#x27;abc&#x27; is not a plain positive number</td></tr>" in html

    good = SimpleUploadedFile("fees.csv", GOOD_CSV.encode(), content_type="text/csv")
    response = client.post("/admin/payments/paymentrequest/import/", {"school": school.pk, "file": good}, follow=True)
    assert "Imported 3 payment request(s) for Nile Gardens School (ng)." in response.content.decode()
    assert PaymentRequest.objects.count() == 3


def test_staff_import_only_into_their_own_school(client, school, students, other_school):
    from django.contrib.auth.models import Permission
    from django.core.files.uploadedfile import SimpleUploadedFile

    outsider = make_staff("kla-bursar", other_school)
    outsider.user_permissions.set(Permission.objects.filter(content_type__app_label="payments"))
    client.force_login(outsider)
    good = SimpleUploadedFile("fees.csv", GOOD_CSV.encode(), content_type="text/csv")
    response = client.post("/admin/payments/paymentrequest/import/", {"school": school.pk, "file": good})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert PaymentRequest.objects.count() == 0


def test_staff_create_a_request_in_admin_with_the_amount_in_major_units(client, school, students, staff):
    client.force_login(staff)
    response = client.post(
        "/admin/payments/paymentrequest/add/",
        {"school": school.pk, "student": students[1].pk, "description": "Bus fees", "amount": "120,000", "currency": "", "due_date": "2026-03-01"},
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    payment_request = PaymentRequest.objects.get()
    assert (payment_request.student.student_number, payment_request.amount_minor, payment_request.currency) == ("STU-0002", 120_000, "UGX")
    assert payment_request.created_by == staff
    assert AuditLog.objects.filter(action="payment_request.created", actor="bursar").count() == 1
    change = client.get(f"/admin/payments/paymentrequest/{payment_request.pk}/change/").content.decode()
    assert payment_request.pay_url in change

    response = client.post(
        "/admin/payments/paymentrequest/add/",
        {"school": school.pk, "student": students[1].pk, "description": "Bus fees", "amount": "120,000.5", "currency": ""},
    )
    assert response.status_code == 200
    assert "has decimals but UGX has no minor unit" in response.content.decode()


def test_admin_lists_only_the_staff_members_schools(client, school, students, staff, other_school):
    PaymentRequestFactory(school=school, student=students[0], description="Ours")
    PaymentRequestFactory(school=other_school, description="Theirs")
    client.force_login(staff)
    html = client.get("/admin/payments/paymentrequest/").content.decode()
    assert "Ours" in html and "Theirs" not in html


def test_the_cancel_action(client, school, students, staff):
    payment_request = PaymentRequestFactory(school=school, student=students[0])
    client.force_login(staff)
    client.post(
        "/admin/payments/paymentrequest/",
        {"action": "cancel_requests", "_selected_action": [payment_request.pk]},
    )
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.CANCELLED
