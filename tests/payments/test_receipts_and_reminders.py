"""Receipts come back: every settled payment issues one receipt (a page at an unguessable address
and a PDF) and one confirmation to the parent, by email with the PDF, or by SMS with the link
when only a phone is known. Reminders go out before and after the due date, never twice for a
request on one day, however many beats run."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.status import PaymentStatus
from payments.models import AuditLog, Notice, Payment, PaymentReceipt, PaymentRequest
from payments.services import (
    notice_deliver,
    payment_provider_status_apply,
    payment_receipt_issue,
    payment_reminders_due,
    school_today,
)
from providers.base import NormalizedStatus
from tests.factories import PaymentRequestFactory
from tests.payments.test_finalize import intent

pytestmark = pytest.mark.django_db


def settle(payment, amount_minor=450_000):
    return payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=amount_minor, currency="UGX", external_txn_id="dtxn-77"),
        source="test",
    )


@pytest.fixture
def published(monkeypatch):
    """What was enqueued by name (config.celery.publish), instead of the broker."""
    sent = []
    monkeypatch.setattr("config.celery.publish", lambda task, args, countdown=None: sent.append((task, args)) or True)
    return sent


# --- Receipts -------------------------------------------------------------------------------------


def test_settling_a_payment_enqueues_its_receipt_once_after_commit(payment_request, dummy_account, published, django_capture_on_commit_callbacks):
    payment_request.parent_phone = "0772 123 456"
    payment_request.save()
    payment = intent(payment_request, dummy_account)
    with django_capture_on_commit_callbacks(execute=True):
        settle(payment)
    with django_capture_on_commit_callbacks(execute=True):
        settle(payment)  # the same success again: nothing new settles
    assert [call for call in published if call[0] == "payments.tasks.payment_receipt_issue"] == [
        ("payments.tasks.payment_receipt_issue", (str(payment.pk),))
    ]


def test_a_payment_with_nobody_to_tell_enqueues_nothing(payment_request, dummy_account, published, django_capture_on_commit_callbacks):
    payment = intent(payment_request, dummy_account)
    with django_capture_on_commit_callbacks(execute=True):
        settle(payment)
    assert "payments.tasks.payment_receipt_issue" not in [task for task, _ in published]


def test_a_failed_payment_gets_no_receipt(payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    payment_provider_status_apply(
        payment_id=payment.pk, status=NormalizedStatus(status=PaymentStatus.FAILED), source="test"
    )
    assert payment_receipt_issue(payment_id=payment.pk) == []
    assert PaymentReceipt.objects.count() == 0


def test_the_parent_gets_the_confirmation_with_the_pdf_by_email(client, payment_request, dummy_account, smtp_server):
    payment_request.parent_email = "mother@example.org"
    payment_request.parent_phone = "0772 123 456"
    payment_request.save()
    payment = intent(payment_request, dummy_account)
    settle(payment)
    [notice_id] = payment_receipt_issue(payment_id=payment.pk)
    assert payment_receipt_issue(payment_id=payment.pk) == []  # the task again: nothing new
    assert notice_deliver(notice_id=notice_id).status == "sent"

    receipt = PaymentReceipt.objects.get()
    assert len(receipt.token) >= 32
    assert receipt.number == f"NG-{receipt.pk:06d}"
    [message] = smtp_server.to("mother@example.org")
    assert message["Subject"] == f"Nile Gardens School: payment received, receipt {receipt.number}"
    text = message.get_body(("plain",)).get_content()
    assert "Nile Gardens School has received your payment of UGX 450,000 for Term 1 fees (Amina Nakato, STU-0001)" in text
    assert f"https://pay.example.org/receipts/{receipt.token}/" in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"receipt-{receipt.number}.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content().startswith(b"%PDF-")
    # Email is known: no SMS besides it.
    assert list(Notice.objects.values_list("kind", "channel", "status")) == [("receipt", "email", "sent")]
    assert AuditLog.objects.filter(action="receipt.issued", target_id=str(payment.pk)).count() == 1


def test_with_only_a_phone_the_parent_gets_the_link_by_sms(payment_request, dummy_account, sms_gateway):
    payment_request.parent_phone = "+254 712 345678"
    payment_request.save()
    payment = intent(payment_request, dummy_account)
    settle(payment)
    [notice_id] = payment_receipt_issue(payment_id=payment.pk)
    assert notice_deliver(notice_id=notice_id).status == "sent"
    receipt = PaymentReceipt.objects.get()
    [sms] = sms_gateway.sent
    assert sms.to == "+254712345678"
    assert sms.body == (
        "Nile Gardens School: payment of UGX 450,000 received for Amina Nakato. Thank you. "
        f"Receipt {receipt.number}: https://pay.example.org/receipts/{receipt.token}/"
    )


def test_a_payment_from_a_provider_with_the_payers_email_gets_a_receipt(payment_request, dummy_account, smtp_server):
    payment = intent(payment_request, dummy_account, payer={"email": "payer@example.org"})
    settle(payment)
    [notice_id] = payment_receipt_issue(payment_id=payment.pk)
    assert notice_deliver(notice_id=notice_id).status == "sent"
    assert len(smtp_server.to("payer@example.org")) == 1


def test_without_any_contact_the_receipt_is_issued_but_not_sent(payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    settle(payment)
    assert payment_receipt_issue(payment_id=payment.pk) == []
    assert PaymentReceipt.objects.filter(payment=payment).count() == 1
    assert Notice.objects.count() == 0


def test_the_receipt_page_and_pdf(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    settle(payment)
    payment_receipt_issue(payment_id=payment.pk)
    receipt = PaymentReceipt.objects.get()
    response = client.get(f"/receipts/{receipt.token}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Payment received</h1>" in page
    for label, value in [
        ("Receipt number", receipt.number),
        ("Student", "Amina Nakato (STU-0001)"),
        ("For", "Term 1 fees"),
        ("Amount paid", "UGX 450,000"),
        ("Paid by", "Dummy (development)"),
        ("Reference", "dtxn-77"),
    ]:
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page, label
    assert f'href="/receipts/{receipt.token}/receipt.pdf"' in page
    assert response["Cache-Control"].startswith("max-age=0")

    pdf = client.get(f"/receipts/{receipt.token}/receipt.pdf")
    assert pdf.status_code == 200
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == f'inline; filename="receipt-{receipt.number}.pdf"'
    assert pdf.content.startswith(b"%PDF-")


def test_an_unknown_receipt_address_is_a_clear_404(client):
    for path in ("/receipts/not-a-token/", "/receipts/not-a-token/receipt.pdf", f"/receipts/{'x' * 100}/"):
        response = client.get(path)
        assert response.status_code == 404
        assert "<h1>Receipt not found</h1>" in response.content.decode()


def test_a_receipt_shows_a_refund_made_since(client, payment_request, dummy_account):
    payment = intent(payment_request, dummy_account)
    settle(payment)
    payment_receipt_issue(payment_id=payment.pk)
    Payment.objects.filter(pk=payment.pk).update(refunded_amount_minor=50_000, status=PaymentStatus.PARTIALLY_REFUNDED)
    page = client.get(f"/receipts/{PaymentReceipt.objects.get().token}/").content.decode()
    assert "<h1>Payment received, partly refunded</h1>" in page
    assert "<dt>Refunded since</dt><dd>UGX 50,000</dd>" in page


def test_a_name_outside_latin_1_still_makes_a_pdf(client, payment_request, dummy_account):
    payment_request.student.full_name = "Łukasz สมชาย"
    payment_request.student.save()
    payment = intent(payment_request, dummy_account)
    settle(payment)
    payment_receipt_issue(payment_id=payment.pk)
    pdf = client.get(f"/receipts/{PaymentReceipt.objects.get().token}/receipt.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")


# --- Reminders ------------------------------------------------------------------------------------


@pytest.fixture
def reminding_school(school):
    school.reminder_days_before = "3"
    school.reminder_days_after = "1,7"
    school.save()
    return school


def requests_due(school, student, today):
    def make(days, **fields):
        return PaymentRequestFactory(
            school=school, student=student, due_date=today + timedelta(days=days),
            parent_email=fields.pop("email", "mother@example.org"), parent_phone=fields.pop("phone", ""), **fields,
        )  # fmt: skip

    return {
        "in_3_days": make(3, phone="0772 123 456"),
        "yesterday": make(-1),
        "a_week_ago": make(-7),
        "in_5_days": make(5),
        "paid_in_3_days": make(3, status=PaymentRequest.Status.CANCELLED, cancelled_at=timezone.now()),
        "no_contact": make(3, email=""),
    }


def test_reminders_go_out_before_and_after_the_due_date_once_a_day(reminding_school, student):
    today = school_today(reminding_school)
    made = requests_due(reminding_school, student, today)
    first = payment_reminders_due()
    notices = {(n.payment_request_id, n.kind, n.channel) for n in Notice.objects.all()}
    assert notices == {
        (made["in_3_days"].pk, "reminder_before", "email"),
        (made["in_3_days"].pk, "reminder_before", "sms"),
        (made["yesterday"].pk, "reminder_after", "email"),
        (made["a_week_ago"].pk, "reminder_after", "email"),
    }
    assert len(first) == 4
    assert set(Notice.objects.values_list("reminder_day", flat=True)) == {today}
    assert payment_reminders_due() == []  # the next hourly beat, the same day
    assert Notice.objects.count() == 4


def test_the_reminder_says_when_it_was_due(reminding_school, student, smtp_server):
    today = school_today(reminding_school)
    request = PaymentRequestFactory(
        school=reminding_school, student=student, due_date=today - timedelta(days=1), parent_email="mother@example.org"
    )
    [notice_id] = payment_reminders_due()
    assert notice_deliver(notice_id=notice_id).status == "sent"
    [message] = smtp_server.to("mother@example.org")
    assert message["Subject"] == f"Overdue: Term 1 fees was due on {request.due_date:%-d %B %Y}"
    assert f"https://pay.example.org/pay/{request.token}/" in message.get_content()


def test_reminders_are_off_unless_the_school_asks(school, student):
    PaymentRequestFactory(
        school=school, student=student, due_date=school_today(school) + timedelta(days=3), parent_email="m@example.org"
    )
    assert payment_reminders_due() == []


def test_a_school_setting_that_is_not_a_list_of_days_is_refused(school):
    from django.core.exceptions import ValidationError

    school.reminder_days_before = "3, soon"
    with pytest.raises(ValidationError) as refused:
        school.full_clean()
    assert refused.value.message_dict == {"reminder_days_before": ["'soon' is not a number of days from 1 to 90."]}


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_queue_each_reminder_once(school, student):
    school.reminder_days_before = "3"
    school.save()
    today = school_today(school)
    for index in range(5):
        PaymentRequestFactory(
            school=school, student=student, due_date=today + timedelta(days=3), parent_email=f"p{index}@example.org"
        )
    barrier = threading.Barrier(2)
    results, errors = [], []

    def beat():
        try:
            barrier.wait()
            results.append(payment_reminders_due())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(queued) for queued in results) == 5
    assert Notice.objects.count() == 5
