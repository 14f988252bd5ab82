"""Pay links reach parents: staff send a request's pay link by email or SMS from the API and the
admin; each send is one message, however often it is asked for or retried. Email goes to a
real SMTP server over a socket with Django's SMTP backend, SMS to the fake Africa's Talking API
over a socket with httpx."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from payments.models import AuditLog, Notice, PaymentRequest
from payments.services import notice_deliver, notices_sweep, payment_request_send
from tests.conftest import wait_for
from tests.payments.conftest import csrf_token
from tests.payments.messaging import AT_KEY, AT_SENDER, AT_USERNAME
from tests.payments.test_api import api_for

pytestmark = pytest.mark.django_db

SEND = "/api/payment-requests/{}/send"


@pytest.fixture
def contactable(payment_request):
    payment_request.parent_email = "mother@example.org"
    payment_request.parent_phone = "0772 123 456"
    payment_request.due_date = timezone.localdate() + timedelta(days=10)
    payment_request.save()
    return payment_request


@pytest.fixture
def api(staff):
    return api_for(staff)


def deliver(notice_id) -> str:
    return notice_deliver(notice_id=notice_id).status


def notice_json(notice: Notice) -> dict:
    return {
        "id": str(notice.pk),
        "payment_request_id": notice.payment_request_id,
        "kind": notice.kind,
        "channel": notice.channel,
        "recipient": notice.recipient,
        "status": notice.status,
        "attempts": notice.attempts,
        "last_error": notice.last_error,
        "created_at": notice.created_at.isoformat().replace("+00:00", "Z"),
        "sent_at": None,
    }


# --- Email ---------------------------------------------------------------------------------------


def test_the_api_sends_the_pay_link_by_email_to_a_real_smtp_server(api, contactable, smtp_server):
    response = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json")
    notice = Notice.objects.get()
    assert response.status_code == 202
    assert response.json() == notice_json(notice)
    assert (notice.kind, notice.channel, notice.recipient, notice.status) == ("pay_link", "email", "mother@example.org", "queued")

    assert deliver(notice.pk) == "sent"
    [message] = smtp_server.to("mother@example.org")
    assert message["Subject"] == "Nile Gardens School: Term 1 fees for Amina Nakato"
    assert message["From"] == "Nile Gardens School <bursar@nilegardens.example>"
    assert message["Message-ID"] == f"<notice-{notice.pk}@pay.example.org>"
    body = message.get_content()
    assert "Nile Gardens School asks you to pay UGX 450,000 for Term 1 fees (Amina Nakato, STU-0001)" in body
    assert f"Pay here: https://pay.example.org/pay/{contactable.token}/" in body
    notice.refresh_from_db()
    assert (notice.status, notice.attempts, notice.provider_message_id) == ("sent", 1, message["Message-ID"])
    assert notice.sent_at is not None
    actions = list(AuditLog.objects.filter(details__notice_id=str(notice.pk)).order_by("id").values_list("action", "actor"))
    assert actions == [("notice.queued", "bursar"), ("notice.sent", "")]


def test_delivering_twice_sends_one_message(contactable, smtp_server):
    queued = payment_request_send(payment_request_id=contactable.pk, channel="email", actor="bursar")
    assert deliver(queued.notice.pk) == "sent"
    assert deliver(queued.notice.pk) == "skipped"
    assert len(smtp_server.messages) == 1


def test_a_mail_server_that_cannot_be_reached_is_tried_again_later(contactable, settings, smtp_server):
    queued = payment_request_send(payment_request_id=contactable.pk, channel="email", actor="bursar")
    real_port = settings.EMAIL_PORT
    settings.EMAIL_PORT = real_port + 1 if real_port < 65535 else real_port - 1  # nothing listens there
    outcome = notice_deliver(notice_id=queued.notice.pk)
    notice = Notice.objects.get()
    assert outcome.status == "queued" and outcome.retry_in > 0
    assert (notice.status, notice.attempts) == ("queued", 1)
    assert notice.last_error.startswith("The mail server could not be reached: ConnectionRefusedError")
    assert notice.next_attempt_at > timezone.now()
    assert deliver(notice.pk) == "skipped"  # not due yet

    settings.EMAIL_PORT = real_port
    Notice.objects.update(next_attempt_at=timezone.now())
    assert deliver(notice.pk) == "sent"
    assert len(smtp_server.messages) == 1
    assert Notice.objects.get().attempts == 2


def test_an_address_the_mail_server_refuses_fails_without_retry(contactable, smtp_server):
    smtp_server.refuse_recipients["mother@example.org"] = "550 5.1.1 No such mailbox"
    queued = payment_request_send(payment_request_id=contactable.pk, channel="email", actor="bursar")
    assert deliver(queued.notice.pk) == "failed"
    notice = Notice.objects.get()
    assert notice.last_error == "The mail server refused the address: [550]"
    assert smtp_server.messages == []
    assert AuditLog.objects.filter(action="notice.failed", details__error=notice.last_error).count() == 1


def test_gives_up_after_the_last_attempt(contactable, settings, smtp_server):
    settings.NOTICE_MAX_ATTEMPTS = 2
    smtp_server.refuse_recipients["mother@example.org"] = "451 4.3.0 Try again later"
    queued = payment_request_send(payment_request_id=contactable.pk, channel="email", actor="bursar")
    assert deliver(queued.notice.pk) == "queued"
    Notice.objects.update(next_attempt_at=timezone.now())
    assert deliver(queued.notice.pk) == "failed"
    assert Notice.objects.get().last_error == "The mail server deferred the address: [451] (gave up after 2 attempts)"


def test_a_link_paid_before_it_went_out_is_not_sent(contactable, smtp_server):
    queued = payment_request_send(payment_request_id=contactable.pk, channel="email", actor="bursar")
    PaymentRequest.objects.filter(pk=contactable.pk).update(status="cancelled", cancelled_at=timezone.now())
    assert deliver(queued.notice.pk) == "failed"
    assert Notice.objects.get().last_error == "Not sent: the request was cancelled before it went out."
    assert smtp_server.messages == []


# --- SMS -----------------------------------------------------------------------------------------


def test_the_api_sends_the_pay_link_by_sms_through_africas_talking(api, contactable, sms_gateway):
    response = api.post(SEND.format(contactable.pk), {"channel": "sms"}, format="json")
    assert response.status_code == 202
    assert deliver(response.json()["id"]) == "sent"
    [request] = sms_gateway.requests
    assert request.headers["Apikey"] == AT_KEY
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body.decode())
    due = contactable.due_date.strftime("%-d %b %Y")
    assert form == {
        "username": [AT_USERNAME],
        "to": ["+256772123456"],  # typed as 0772 123 456 at a UGX school
        "from": [AT_SENDER],
        "message": [
            f"Nile Gardens School: please pay UGX 450,000 for Term 1 fees (Amina Nakato) by {due}: "
            f"https://pay.example.org/pay/{contactable.token}/"
        ],
    }
    notice = Notice.objects.get()
    assert (notice.status, notice.provider_message_id) == ("sent", "ATXid_00000001")


def test_a_busy_gateway_is_tried_again_and_sends_once(contactable, sms_gateway):
    sms_gateway.fail_next(1, 503)
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "queued"
    assert Notice.objects.get().last_error == "Africa's Talking answered 503"
    Notice.objects.update(next_attempt_at=timezone.now())
    assert deliver(queued.notice.pk) == "sent"
    assert len(sms_gateway.sent) == 1


def test_a_gateway_error_for_the_recipient_is_tried_again(contactable, sms_gateway):
    sms_gateway.fail_recipients_next(1, 500)
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "queued"
    assert Notice.objects.get().last_error == "Africa's Talking: InternalServerError (500)"
    Notice.objects.update(next_attempt_at=timezone.now())
    assert deliver(queued.notice.pk) == "sent"


def test_a_blacklisted_number_fails_without_retry(contactable, sms_gateway):
    sms_gateway.blacklist.add("+256772123456")
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "failed"
    assert Notice.objects.get().last_error == "Africa's Talking: UserInBlacklist (406)"
    assert sms_gateway.sent == []


def test_a_wrong_api_key_fails_and_says_so(contactable, settings, sms_gateway):
    settings.AFRICASTALKING_API_KEY = "not-the-key"
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "failed"
    notice = Notice.objects.get()
    assert notice.last_error == "Africa's Talking refused the API key (401)"
    assert "not-the-key" not in str(list(AuditLog.objects.values_list("details", flat=True)))


def test_a_lost_answer_is_in_doubt_and_never_sent_again(contactable, settings, sms_gateway):
    settings.SMS_TIMEOUT_SECONDS = 0.3
    sms_gateway.delay_seconds = 1.0
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "in_doubt"
    assert Notice.objects.get().last_error == "Africa's Talking's answer was lost: ReadTimeout"
    sms_gateway.delay_seconds = 0
    assert deliver(queued.notice.pk) == "skipped"
    assert notices_sweep(now=timezone.now() + timedelta(hours=1)) == []
    wait_for(lambda: len(sms_gateway.sent) == 1)  # the fake took the first one, late
    assert len(sms_gateway.sent) == 1


def test_a_number_without_a_country_at_a_school_of_several_countries_fails(contactable, sms_gateway):
    contactable.school.currency = "XOF"
    contactable.school.save()
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "failed"
    assert Notice.objects.get().last_error == "'0772 123 456': give the number with its country code (+...)."


def test_the_console_backend_prints_the_message(contactable, settings, capsys):
    settings.SMS_BACKEND = "payments.sms.console.ConsoleSmsBackend"
    queued = payment_request_send(payment_request_id=contactable.pk, channel="sms", actor="bursar")
    assert deliver(queued.notice.pk) == "sent"
    out = capsys.readouterr().out
    assert out.startswith("SMS to +256772123456 (console-")
    assert f"https://pay.example.org/pay/{contactable.token}/" in out


# --- The API's answers ---------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_send(api, contactable, smtp_server):
    first = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert Notice.objects.count() == 1
    other = api.post(SEND.format(contactable.pk), {"channel": "sms"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409
    assert other.json() == {
        "detail": "This Idempotency-Key was used for another send of this request.",
        "code": "idempotency_key_reused",
        "notice": first.json(),
    }
    # Without a key, a second call is a re-send: a second message.
    resend = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json")
    assert resend.status_code == 202 and resend.json()["id"] != first.json()["id"]
    for notice in Notice.objects.all():
        deliver(notice.pk)
    assert len(smtp_server.to("mother@example.org")) == 2


def test_an_overlong_idempotency_key_is_refused(api, contactable):
    response = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert response.status_code == 400
    assert response.json() == {"detail": "Idempotency-Key is longer than 255 characters.", "code": "idempotency_key_invalid"}


def test_a_channel_other_than_email_or_sms_is_refused(api, contactable):
    response = api.post(SEND.format(contactable.pk), {"channel": "fax"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"channel": ['"fax" is not a valid choice.']}
    response = api.post(SEND.format(contactable.pk), {}, format="json")
    assert (response.status_code, response.json()) == (400, {"channel": ["This field is required."]})
    assert Notice.objects.count() == 0


def test_a_request_without_the_contact_is_refused(api, payment_request):
    response = api.post(SEND.format(payment_request.pk), {"channel": "email"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request has no parent email address: add one first.", "code": "no_email"}
    response = api.post(SEND.format(payment_request.pk), {"channel": "sms"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The request has no parent phone number: add one first.", "code": "no_phone"}


def test_a_request_that_is_not_open_is_refused(api, contactable):
    PaymentRequest.objects.filter(pk=contactable.pk).update(status="cancelled", cancelled_at=timezone.now())
    response = api.post(SEND.format(contactable.pk), {"channel": "email"}, format="json")
    assert response.status_code == 409
    assert response.json() == {"detail": "The request is cancelled: nothing to pay.", "code": "request_not_open"}


def test_another_schools_request_is_not_found(api, other_school):
    from tests.factories import PaymentRequestFactory

    theirs = PaymentRequestFactory(school=other_school, parent_email="x@example.org")
    for pk in (theirs.pk, 999_999):
        response = api.post(SEND.format(pk), {"channel": "email"}, format="json")
        assert (response.status_code, response.json()) == (404, {"detail": "No such payment request.", "code": "not_found"})
    assert Notice.objects.count() == 0


def test_sending_needs_a_token(contactable):
    from rest_framework.test import APIClient

    response = APIClient().post(SEND.format(contactable.pk), {"channel": "email"}, format="json")
    assert response.status_code == 401
    assert Notice.objects.count() == 0


# --- The admin -----------------------------------------------------------------------------------


def test_staff_send_from_the_request_page(client, staff, contactable, smtp_server, sms_gateway):
    client.force_login(staff)
    url = f"/admin/payments/paymentrequest/{contactable.pk}/change/"
    page = client.get(url).content.decode()
    email_url = f"/admin/payments/paymentrequest/{contactable.pk}/send/email/"
    assert f'formaction="{email_url}"' in page and ">Send the pay link by email</button>" in page
    assert ">Send the pay link by SMS</button>" in page
    response = client.post(email_url, {"csrfmiddlewaretoken": csrf_token(page)}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "Sending 1 pay link(s) by email." in response.content.decode()
    notice = Notice.objects.get()
    assert (notice.channel, notice.requested_by) == ("email", "bursar")
    assert "Messages to the parent" in response.content.decode()
    assert deliver(notice.pk) == "sent"
    assert len(smtp_server.to("mother@example.org")) == 1
    assert client.get(email_url).status_code == 405


def test_staff_send_to_many_with_the_list_action(client, staff, contactable):
    from tests.factories import PaymentRequestFactory

    no_phone = PaymentRequestFactory(school=contactable.school, student=contactable.student, parent_email="dad@example.org")
    client.force_login(staff)
    response = client.post(
        "/admin/payments/paymentrequest/",
        {"action": "send_by_sms", "_selected_action": [contactable.pk, no_phone.pk]},
        follow=True,
    )
    content = response.content.decode()
    assert "Sending 1 pay link(s) by SMS." in content
    assert "Not sent: STU-0001 Amina Nakato: The request has no parent phone number: add one first." in content
    assert list(Notice.objects.values_list("payment_request_id", "channel")) == [(contactable.pk, "sms")]


def test_staff_of_another_school_cannot_send(client, contactable, other_school):
    from django.contrib.auth.models import Permission

    from tests.payments.conftest import make_staff

    outsider = make_staff("outsider", other_school)
    outsider.user_permissions.set(Permission.objects.filter(content_type__app_label="payments"))
    client.force_login(outsider)
    response = client.post(f"/admin/payments/paymentrequest/{contactable.pk}/send/email/")
    assert response.status_code == 403
    assert Notice.objects.count() == 0


# --- A real worker --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_what_the_api_queued(celery_worker, staff, school, student, smtp_server):
    """The task is enqueued by name after commit and run by a real Celery worker."""
    from tests.factories import PaymentRequestFactory

    payment_request = PaymentRequestFactory(school=school, student=student, parent_email="mother@example.org")
    response = api_for(staff).post(SEND.format(payment_request.pk), {"channel": "email"}, format="json")
    assert response.status_code == 202
    wait_for(lambda: smtp_server.to("mother@example.org"))
    wait_for(lambda: Notice.objects.get().status == "sent")
    assert len(smtp_server.messages) == 1


# --- At the same moment ---------------------------------------------------------------------------


def run_together(*calls):
    """Run each call in its own thread (its own database connection), released at once."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
def test_two_calls_with_one_idempotency_key_at_once_make_one_send(staff, school, student):
    from tests.factories import PaymentRequestFactory

    payment_request = PaymentRequestFactory(school=school, student=student, parent_email="mother@example.org")
    clients = [api_for(staff), api_for(staff)]
    responses = run_together(
        *[
            lambda client=client: client.post(
                SEND.format(payment_request.pk), {"channel": "email"}, format="json", HTTP_IDEMPOTENCY_KEY="same-key"
            )
            for client in clients
        ]
    )
    assert sorted(response.status_code for response in responses) == [200, 202]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert Notice.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_one_notice_at_once_send_one_message(school, student, smtp_server):
    from tests.factories import PaymentRequestFactory

    payment_request = PaymentRequestFactory(school=school, student=student, parent_email="mother@example.org")
    notice = payment_request_send(payment_request_id=payment_request.pk, channel="email", actor="bursar").notice
    statuses = run_together(lambda: deliver(notice.pk), lambda: deliver(notice.pk), lambda: deliver(notice.pk))
    assert sorted(statuses) == ["sent", "skipped", "skipped"]
    assert len(smtp_server.messages) == 1
