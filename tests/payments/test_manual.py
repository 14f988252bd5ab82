"""Manual payments: a parent reports a bank transfer, mobile-money or cash payment (with an
optional receipt); it waits as ``awaiting_review``; staff confirm or reject it in admin with a
note, and a confirmation settles the request through the same ``payment_finalize``."""


import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from core.status import PaymentStatus
from payments import services
from payments.models import AuditLog, Payment, PaymentRequest, ReviewFlag
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def report(client, payment_request, **fields):
    data = {"method": "bank_transfer", "amount": "450,000", "reference": "BANK-REF-991", **fields}
    return client.post(f"/pay/{payment_request.token}/manual", data)


def test_a_bank_transfer_with_a_receipt_waits_for_review(client, payment_request):
    receipt = SimpleUploadedFile("my receipt.PNG", PNG, content_type="image/png")
    response = report(client, payment_request, receipt=receipt)
    payment = Payment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/payments/{payment.pk}/thanks"
    assert (payment.status, payment.method, payment.provider, payment.account) == (
        PaymentStatus.AWAITING_REVIEW,
        "bank_transfer",
        "manual",
        None,
    )
    assert (payment.amount_minor, payment.currency, payment.manual_reference) == (450_000, "UGX", "BANK-REF-991")
    assert payment.reference.startswith("M") and len(payment.reference) == 12
    assert payment.receipt_content_type == "image/png"
    # Stored under a random name, never the parent's.
    assert payment.receipt.name.startswith("receipts/ng/") and payment.receipt.name.endswith(".png")
    assert "my receipt" not in payment.receipt.name
    assert payment.receipt.read() == PNG
    assert payment.next_check_at is None  # the janitor never asks a provider about it
    entry = AuditLog.objects.get(action="payment.manual_reported")
    assert entry.details["receipt"] == "image/png" and entry.actor_type == "parent"
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.OPEN

    thanks = client.get(response["Location"]).content.decode()
    assert "Waiting for the school" in thanks and "BANK-REF-991" in thanks
    page = client.get(f"/pay/{payment_request.token}/").content.decode()
    assert "You reported a bank transfer of UGX 450,000" in page


def test_a_pdf_receipt_is_accepted(client, payment_request):
    report(client, payment_request, receipt=SimpleUploadedFile("r.pdf", PDF, content_type="application/pdf"))
    assert Payment.objects.get().receipt_content_type == "application/pdf"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("receipt.png", b"<html><script>alert(1)</script></html>", "The receipt must be a PDF, JPEG, PNG or WebP file."),
        ("receipt.svg", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "The receipt must be a PDF, JPEG, PNG or WebP file."),
        ("receipt.pdf", b"MZ\x90\x00 not a pdf", "The receipt must be a PDF, JPEG, PNG or WebP file."),
    ],
)
def test_a_receipt_is_checked_by_its_content(client, payment_request, name, content, message):
    response = report(client, payment_request, receipt=SimpleUploadedFile(name, content, content_type="image/png"))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Payment.objects.count() == 0


def test_a_receipt_over_the_size_limit_is_refused(client, payment_request, settings):
    settings.MANUAL_RECEIPT_MAX_BYTES = 1024
    response = report(client, payment_request, receipt=SimpleUploadedFile("r.png", PNG + b"\x00" * 2048))
    assert response.status_code == 400
    assert "The receipt is larger than 1 KB." in response.content.decode()
    assert Payment.objects.count() == 0


def test_an_upload_far_over_the_limit_is_refused_before_it_is_read(client, payment_request, settings):
    settings.MANUAL_RECEIPT_MAX_BYTES = 1024 * 1024
    big = SimpleUploadedFile("r.png", PNG + b"\x00" * (2 * 1024 * 1024))
    response = report(client, payment_request, receipt=big)
    assert response.status_code == 413
    assert "The receipt is larger than 1 MB." in response.content.decode()
    assert Payment.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "field_error"),
    [
        ({"reference": ""}, "Enter the reference of your transfer."),
        ({"amount": "450,000.50"}, "Write the amount without decimals: UGX has none."),
        ({"amount": "0"}, "Enter an amount greater than zero."),
        ({"amount": "4,50,000"}, "Write the amount in figures only, for example 120,000."),
        ({"amount": "12o,000"}, "Write the amount in figures only, for example 120,000."),
        ({"method": "cheque"}, "Select a valid choice."),
    ],
)
def test_the_form_says_what_is_wrong(client, payment_request, fields, field_error):
    response = report(client, payment_request, **fields)
    assert response.status_code == 400
    html = response.content.decode()
    assert field_error in html
    # Listed at the top too, linked to its field; the parser's own words never reach the parent.
    assert html.index('id="error-summary"') < html.index('id="manual-heading"')
    assert "plain positive number" not in html
    assert Payment.objects.count() == 0


def test_cash_needs_no_reference(client, payment_request):
    assert report(client, payment_request, method="cash", reference="").status_code == 302
    assert Payment.objects.get().method == "cash"


def test_reports_waiting_for_review_are_limited(client, payment_request, settings):
    settings.MANUAL_PAYMENTS_PENDING_MAX = 2
    for index in range(2):
        assert report(client, payment_request, reference=f"R{index}").status_code == 302
    response = report(client, payment_request, reference="R3")
    assert response.status_code == 409
    assert "The school has not yet checked the payments you reported." in response.content.decode()


def test_a_closed_request_takes_no_report(client, payment_request):
    PaymentRequest.objects.filter(pk=payment_request.pk).update(status=PaymentRequest.Status.CANCELLED)
    response = report(client, payment_request)
    assert response.status_code == 200
    assert "no longer open" in response.content.decode()
    assert Payment.objects.count() == 0


# --- Staff review -----------------------------------------------------------------------------------


def reported(payment_request, amount_minor=450_000, receipt=None):
    return services.manual_payment_submit(
        payment_request_id=payment_request.pk,
        method="bank_transfer",
        manual_reference="BANK-REF-991",
        amount_minor=amount_minor,
        receipt=receipt,
    )


def test_confirming_settles_the_request_through_finalize(payment_request, staff):
    payment = reported(payment_request)
    services.manual_payment_review(payment_id=payment.pk, decision="confirm", note="On the statement of 3 March", reviewer=staff)
    payment.refresh_from_db()
    payment_request.refresh_from_db()
    assert (payment.status, payment.reviewed_by, payment.review_note) == (PaymentStatus.SUCCEEDED, staff, "On the statement of 3 March")
    assert (payment_request.status, payment_request.paid_payment_id) == (PaymentRequest.Status.PAID, payment.pk)
    reviewed = AuditLog.objects.get(action="payment.reviewed")
    assert (reviewed.actor_type, reviewed.actor, reviewed.details["decision"]) == ("staff", "bursar", "confirm")
    finalize = AuditLog.objects.get(action="payment.finalize")
    assert (finalize.actor, finalize.details["result"]) == ("bursar", "paid")


def test_confirming_a_different_amount_flags_it(payment_request, staff):
    payment = reported(payment_request, amount_minor=400_000)
    services.manual_payment_review(payment_id=payment.pk, decision="confirm", note="Part payment seen", reviewer=staff)
    payment.refresh_from_db()
    payment_request.refresh_from_db()
    assert (payment.status, payment.review_flag) == (PaymentStatus.SUCCEEDED, ReviewFlag.AMOUNT_MISMATCH)
    assert payment_request.status == PaymentRequest.Status.OPEN


def test_rejecting_fails_the_payment_and_keeps_the_request_open(client, payment_request, staff):
    payment = reported(payment_request)
    services.manual_payment_review(payment_id=payment.pk, decision="reject", note="Not on the statement", reviewer=staff)
    payment.refresh_from_db()
    payment_request.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert payment_request.status == PaymentRequest.Status.OPEN
    assert AuditLog.objects.filter(action="payment.finalize").count() == 0
    html = client.get(f"/payments/{payment.pk}/thanks").content.decode()
    assert "The school could not confirm the bank transfer you reported." in html
    assert "Not on the statement" not in html  # staff notes stay with staff


@pytest.mark.parametrize(
    ("decision", "note", "message"),
    [("confirm", "  ", "Write a note"), ("maybe", "hm", "Choose confirm or reject.")],
)
def test_a_review_needs_a_decision_and_a_note(payment_request, staff, decision, note, message):
    payment = reported(payment_request)
    with pytest.raises(services.ReviewError, match=message):
        services.manual_payment_review(payment_id=payment.pk, decision=decision, note=note, reviewer=staff)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.AWAITING_REVIEW


def test_a_payment_is_reviewed_once(payment_request, staff):
    payment = reported(payment_request)
    services.manual_payment_review(payment_id=payment.pk, decision="confirm", note="ok", reviewer=staff)
    with pytest.raises(services.ReviewError, match="already reviewed"):
        services.manual_payment_review(payment_id=payment.pk, decision="reject", note="oops", reviewer=staff)


def test_staff_of_another_school_cannot_review(payment_request, other_school):
    payment = reported(payment_request)
    outsider = make_staff("kla-bursar", other_school)
    with pytest.raises(services.ReviewError, match="not staff of this payment's school"):
        services.manual_payment_review(payment_id=payment.pk, decision="confirm", note="ok", reviewer=outsider)


def test_the_admin_review_page_confirms_with_a_note(client, payment_request, staff):
    payment = reported(payment_request, receipt=SimpleUploadedFile("r.png", PNG))
    client.force_login(staff)
    change = client.get(f"/admin/payments/payment/{payment.pk}/change/").content.decode()
    assert f'href="/admin/payments/payment/{payment.pk}/review/" class="reviewlink">Review manual payment</a>' in change
    page = client.get(f"/admin/payments/payment/{payment.pk}/review/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "BANK-REF-991" in html and "UGX 450,000" in html
    assert f'<img src="/admin/payments/payment/{payment.pk}/receipt/"' in html

    response = client.post(f"/admin/payments/payment/{payment.pk}/review/", {"decision": "confirm", "note": ""})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()

    response = client.post(
        f"/admin/payments/payment/{payment.pk}/review/", {"decision": "confirm", "note": "Seen on statement"}, follow=True
    )
    assert "Payment confirmed. The payment request is now paid." in response.content.decode()
    payment_request.refresh_from_db()
    assert payment_request.status == PaymentRequest.Status.PAID


def test_receipts_are_for_staff_of_the_school_only(client, payment_request, staff, other_school):
    payment = reported(payment_request, receipt=SimpleUploadedFile("r.pdf", PDF))
    url = f"/admin/payments/payment/{payment.pk}/receipt/"
    assert client.get(url).status_code == 302  # to the admin login
    client.force_login(make_staff("kla-bursar", other_school, superuser=False))
    assert client.get(url).status_code in (403, 404)
    client.force_login(staff)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == PDF
    # The payment's summary links it, at the top of its page.
    page = client.get(f"/admin/payments/payment/{payment.pk}/change/").content.decode()
    summary = page[page.index('id="summary"') : page.index("</dl>")]
    assert f"<a href=\"{url}\">The parent's receipt ({payment.receipt_content_type})</a>" in summary


def test_staff_of_another_school_cannot_open_the_review_page(client, payment_request, other_school):
    from django.contrib.auth.models import Permission

    payment = reported(payment_request)
    outsider = make_staff("kla-bursar", other_school)
    outsider.user_permissions.set(Permission.objects.filter(content_type__app_label="payments"))
    client.force_login(outsider)
    assert client.get(f"/admin/payments/payment/{payment.pk}/review/").status_code == 404
    response = client.post(f"/admin/payments/payment/{payment.pk}/review/", {"decision": "confirm", "note": "x"})
    assert response.status_code == 404
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.AWAITING_REVIEW
