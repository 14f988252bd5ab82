"""Every path out of POST /api/webhooks/<provider>[/<school_code>], with its exact status and body."""

import json
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from core.status import PaymentStatus
from payments.models import AuditLog, OutboxEvent, Payment, WebhookEvent
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.factories import AccountFactory, SchoolFactory

pytestmark = pytest.mark.django_db


def assert_nothing_stored():
    assert WebhookEvent.objects.count() == 0
    assert Payment.objects.count() == 0


def refusal_audit():
    entries = list(AuditLog.objects.filter(action="webhook.refused"))
    assert len(entries) == 1
    return entries[0]


# --- 413 -------------------------------------------------------------------------------------


def test_body_over_256_kib_is_413_and_nothing_is_stored(client, account):
    body = surepay_body(raw={"padding": "x" * (256 * 1024)})
    assert len(body) > 256 * 1024
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 413
    assert response.json() == {"detail": "Body larger than 262144 bytes", "code": "payload_too_large"}
    assert_nothing_stored()


def test_body_of_exactly_256_kib_is_not_refused_for_size(client, account):
    base = surepay_body(raw={"padding": ""})
    body = surepay_body(raw={"padding": "x" * (256 * 1024 - len(base))})
    assert len(body) == 256 * 1024
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 202


# --- 404 -------------------------------------------------------------------------------------


def test_unknown_provider_is_404(client, account):
    body = surepay_body()
    response = post_webhook(client, body, provider="nopay", signature=sign(body))
    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown provider 'nopay'", "code": "unknown_provider"}
    assert_nothing_stored()


# --- 401 -------------------------------------------------------------------------------------


def test_missing_school_code_is_401_with_only_an_audit_entry(client, account):
    body = surepay_body()
    response = post_webhook(client, body, school_code=None, signature=sign(body))
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Missing school code: send the X-School-Code header or use /api/webhooks/<provider>/<school_code>",
        "code": "school_code_missing",
    }
    assert_nothing_stored()
    assert refusal_audit().details["reason"] == "school_code_missing"


ACCOUNT_UNKNOWN = {
    "detail": "Unknown or inactive school, or no active account with this provider",
    "code": "account_unknown",
}


def test_unknown_school_is_401(client, account):
    body = surepay_body()
    response = post_webhook(client, body, school_code="zz", signature=sign(body))
    assert (response.status_code, response.json()) == (401, ACCOUNT_UNKNOWN)
    assert_nothing_stored()
    audit = refusal_audit()
    assert audit.details == {"reason": "account_unknown", "school_code": "zz", "remote_addr": "127.0.0.1", "body_bytes": len(body)}


def test_inactive_school_is_401(client, account):
    account.school.active = False
    account.school.save()
    body = surepay_body()
    response = post_webhook(client, body, signature=sign(body))
    assert (response.status_code, response.json()) == (401, ACCOUNT_UNKNOWN)
    assert_nothing_stored()


def test_inactive_account_is_401(client, account):
    account.active = False
    account.save()
    body = surepay_body()
    response = post_webhook(client, body, signature=sign(body))
    assert (response.status_code, response.json()) == (401, ACCOUNT_UNKNOWN)
    assert_nothing_stored()


def test_school_without_that_provider_is_401(client, account):
    body = surepay_body()
    response = post_webhook(client, body, provider="dummy", signature=sign(body))
    assert (response.status_code, response.json()) == (401, ACCOUNT_UNKNOWN)


def test_missing_signature_is_401(client, account):
    response = post_webhook(client, surepay_body())
    assert response.status_code == 401
    assert response.json() == {"detail": "Missing X-Signature header", "code": "signature_missing"}
    assert_nothing_stored()
    audit = refusal_audit()
    assert audit.details["reason"] == "SignatureMissing"
    assert audit.school_id == account.school_id


WRONG_SIGNATURE = {"detail": "X-Signature does not match the body", "code": "signature_invalid"}


def test_signature_with_another_secret_is_401(client, account):
    body = surepay_body()
    response = post_webhook(client, body, signature=sign(body, "not-the-secret"))
    assert (response.status_code, response.json()) == (401, WRONG_SIGNATURE)
    assert_nothing_stored()
    # The audit entry keeps no payload and no signature.
    audit = refusal_audit()
    assert "evt-001" not in json.dumps(audit.details)
    assert sign(body, "not-the-secret") not in json.dumps(audit.details)


def test_tampered_body_is_401(client, account):
    body = surepay_body()
    tampered = surepay_body(amount="900,000")
    response = post_webhook(client, tampered, signature=sign(body))
    assert (response.status_code, response.json()) == (401, WRONG_SIGNATURE)
    assert_nothing_stored()


def test_signature_that_is_not_hex_is_401(client, account):
    response = post_webhook(client, surepay_body(), signature="ünïcode-garbage")
    assert (response.status_code, response.json()) == (401, WRONG_SIGNATURE)


def test_previous_secret_works_during_rotation_and_not_after(client, account):
    account.webhook_secret = "new-secret"
    account.previous_webhook_secret = "sekret"
    account.previous_secret_expires_at = timezone.now() + timedelta(hours=24)
    account.save()
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body, "sekret")).status_code == 202
    body2 = surepay_body(event_id="evt-002")
    assert post_webhook(client, body2, signature=sign(body2, "new-secret")).status_code == 202

    account.previous_secret_expires_at = timezone.now() - timedelta(seconds=1)
    account.save()
    body3 = surepay_body(event_id="evt-003")
    response = post_webhook(client, body3, signature=sign(body3, "sekret"))
    assert (response.status_code, response.json()) == (401, WRONG_SIGNATURE)


# --- 400 -------------------------------------------------------------------------------------


def test_malformed_json_is_400_and_kept_as_a_dead_letter(client, account):
    body = b'{"event_id": "evt-001", "amount": '
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Malformed JSON body: Expecting value: line 1 column 35 (char 34)",
        "code": "malformed_json",
    }
    dead = WebhookEvent.objects.get()
    assert dead.status == WebhookEvent.Status.REJECTED
    assert dead.raw_body == body.decode()
    assert Payment.objects.count() == 0


def test_json_that_is_not_an_object_is_400(client, account):
    body = b'["evt-001"]'
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 400
    assert response.json() == {"detail": "Malformed JSON body: expected a JSON object", "code": "malformed_json"}


def test_invalid_fields_are_400_with_field_errors_and_a_dead_letter(client, account):
    body = surepay_body(amount="100.5", currency="UGX", status="DONE", provider_student_id=None)
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid webhook payload",
        "code": "invalid_payload",
        "errors": [
            {"field": "amount", "message": "amount '100.5' has decimals but UGX has no minor unit"},
            {"field": "status", "message": "Input should be 'SUCCEEDED', 'FAILED', 'PENDING' or 'REVERSED'"},
            {"field": "provider_student_id", "message": "Field required"},
        ],
    }
    dead = WebhookEvent.objects.get()
    assert dead.status == WebhookEvent.Status.REJECTED
    assert dead.external_event_id is None
    assert [error["field"] for error in dead.errors] == ["amount", "status", "provider_student_id"]
    assert json.loads(dead.raw_body)["event_id"] == "evt-001"
    assert Payment.objects.count() == 0


def test_unknown_currency_is_a_field_error(client, account):
    body = surepay_body(currency="XYZ")
    response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "currency", "message": "unknown currency 'XYZ'"}]


def test_the_same_invalid_body_again_bumps_one_dead_letter(client, account):
    body = surepay_body(amount="-5")
    for _ in range(3):
        assert post_webhook(client, body, signature=sign(body)).status_code == 400
    dead = WebhookEvent.objects.get()
    assert dead.attempts == 3


def test_a_dead_letter_does_not_block_the_corrected_redelivery(client, account):
    bad = surepay_body(amount="1e3")
    assert post_webhook(client, bad, signature=sign(bad)).status_code == 400
    good = surepay_body()
    response = post_webhook(client, good, signature=sign(good))
    assert response.status_code == 202
    assert WebhookEvent.objects.filter(status=WebhookEvent.Status.REJECTED).count() == 1
    process_pending()
    assert Payment.objects.get().amount_minor == 100_000


# --- 202 / 200 --------------------------------------------------------------------------------


def test_new_event_is_202_stored_and_becomes_its_payment(
    client, account, fake_directory, django_capture_on_commit_callbacks
):
    body = surepay_body()
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 202
    assert response.json() == {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"}
    assert len(callbacks) == 1  # the processing task, enqueued on commit

    event = WebhookEvent.objects.get()
    assert (event.external_event_id, event.status, event.event_type) == ("evt-001", "pending", "payment.succeeded")
    assert event.raw_body == body.decode()
    assert event.headers["X-Signature"] == sign(body)

    assert process_pending() == ["new -> succeeded; student mapped"]
    event.refresh_from_db()
    payment = Payment.objects.get()
    assert event.payment_id == payment.pk
    assert event.applied_at is not None
    assert (payment.external_txn_id, payment.amount_minor, payment.currency) == ("txn-123", 100_000, "UGX")
    assert payment.status == PaymentStatus.SUCCEEDED
    assert (payment.provider_student_id, payment.mapping_status) == ("prov-001", "mapped")
    audit = AuditLog.objects.get(action="payment.webhook")
    assert audit.details["from"] is None and audit.details["to"] == "succeeded"


def test_same_event_again_is_200_and_changes_nothing(client, account):
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    response = post_webhook(client, body, signature=sign(body))
    process_pending()
    assert response.status_code == 200
    assert response.json() == {"detail": "Duplicate webhook ignored", "event_id": "evt-001", "status": "pending"}
    assert WebhookEvent.objects.count() == 1
    assert Payment.objects.count() == 1
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1


def test_duplicate_reports_the_events_current_status(client, account):
    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    WebhookEvent.objects.update(status=WebhookEvent.Status.PROCESSED)
    assert post_webhook(client, body, signature=sign(body)).json()["status"] == "processed"


def test_provider_slug_is_case_insensitive_and_school_may_be_in_the_path(client, account):
    body = surepay_body()
    response = post_webhook(client, body, provider="SUREPAY", school_code=None, path_school="ng", signature=sign(body))
    assert response.status_code == 202
    assert WebhookEvent.objects.get().provider == "surepay"


def test_path_school_code_wins_over_the_header(client, account):
    other = AccountFactory(school=SchoolFactory(code="other"), provider="surepay", webhook_secret="other-secret")
    body = surepay_body()
    response = post_webhook(client, body, school_code="ng", path_school="other", signature=sign(body, "other-secret"))
    assert response.status_code == 202
    assert WebhookEvent.objects.get().account == other


def test_get_is_405(client, account):
    response = client.get("/api/webhooks/surepay")
    assert response.status_code == 405
    assert response.json() == {"detail": "Use POST", "code": "method_not_allowed"}
    assert response["Allow"] == "POST"


def test_two_schools_may_reuse_event_ids(client, account):
    AccountFactory(school=SchoolFactory(code="b"), provider="surepay", webhook_secret="b-secret")
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    assert post_webhook(client, body, school_code="b", signature=sign(body, "b-secret")).status_code == 202
    process_pending()
    assert Payment.objects.count() == 2


# --- The payment state machine through the endpoint ------------------------------------------------


def send(client, **fields):
    """Deliver one event and process it, as the worker would right after."""
    body = surepay_body(**fields)
    response = post_webhook(client, body, signature=sign(body))
    process_pending()
    return response


def test_pending_then_succeeded_moves_the_payment_forward(client, account):
    send(client, event_id="e1", status="PENDING")
    assert Payment.objects.get().status == PaymentStatus.PENDING
    send(client, event_id="e2", status="SUCCEEDED")
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED


def test_a_late_failed_after_succeeded_is_recorded_not_applied(client, account):
    assert send(client, event_id="e1", status="SUCCEEDED").status_code == 202
    response = send(client, event_id="e2", status="FAILED")
    assert response.status_code == 202
    payment = Payment.objects.get()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert WebhookEvent.objects.filter(external_event_id="e2", payment=payment).exists()
    late = AuditLog.objects.filter(action="payment.webhook").order_by("id").last()
    assert late.details["applied"] is False
    assert late.details["note"] == "recorded: failed after succeeded (outranked)"


def test_a_success_after_a_failure_is_taken(client, account):
    send(client, event_id="e1", status="FAILED")
    send(client, event_id="e2", status="SUCCEEDED")
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED


def test_reversal_refunds_the_payment(client, account):
    send(client, event_id="e1", status="SUCCEEDED")
    send(client, event_id="e2", status="REVERSED")
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.REFUNDED, 100_000)


def test_partial_reversal_partially_refunds(client, account):
    send(client, event_id="e1", status="SUCCEEDED")
    send(client, event_id="e2", status="REVERSED", amount="40,000")
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 40_000)
    assert payment.amount_minor == 100_000


def test_a_reversal_before_success_waits_for_it_and_is_then_counted(client, account):
    send(client, event_id="e1", status="PENDING")
    send(client, event_id="e2", status="REVERSED", amount="30,000")
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PENDING, 0)
    send(client, event_id="e3", status="SUCCEEDED")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED, 100_000, 30_000,
    )  # fmt: skip


def test_success_records_the_confirmed_amount(client, account):
    send(client, event_id="e1", status="PENDING", amount="90,000")
    send(client, event_id="e2", status="SUCCEEDED", amount="100,000")
    assert Payment.objects.get().amount_minor == 100_000


# --- Budget of the request path ---------------------------------------------------------------


def test_new_event_takes_at_most_8_queries(client, account, django_assert_max_num_queries):
    body = surepay_body()
    with django_assert_max_num_queries(8):
        assert post_webhook(client, body, signature=sign(body)).status_code == 202


def test_with_the_account_cached_a_new_event_is_one_insert(client, account, django_assert_num_queries):
    """The hot path: the duplicate gate is the insert itself (an event stored before inserts
    nothing, so even inside the test's own transaction no savepoint is needed), and the event's
    outbox row is written by the same statement."""
    first = surepay_body(event_id="warm")
    post_webhook(client, first, signature=sign(first))
    body = surepay_body()
    with django_assert_num_queries(1) as captured:
        assert post_webhook(client, body, signature=sign(body)).status_code == 202
    statements = [query["sql"].split()[0] for query in captured.captured_queries]
    assert statements == ["WITH"]
    event = WebhookEvent.objects.get(external_event_id=json.loads(body)["event_id"])
    row = OutboxEvent.objects.get(event_type="webhook.received", payload__webhook_event_id=event.pk)
    assert row.school_id == account.school_id and row.payload["provider_event_id"] == event.external_event_id


def test_a_duplicate_delivery_writes_no_second_outbox_row(client, account):
    body = surepay_body(event_id="twice")
    for _ in range(2):
        assert post_webhook(client, body, signature=sign(body)).status_code in (200, 202)
    assert OutboxEvent.objects.filter(event_type="webhook.received", payload__provider_event_id="twice").count() == 1


def test_request_path_makes_no_outbound_http_call(
    client, account, fake_directory, monkeypatch, django_capture_on_commit_callbacks
):
    """Only the database and the broker may be contacted while a webhook is answered, even with
    the on-commit enqueue executed; the student look-up belongs to the worker."""
    contacted = []
    real_connect = socket.socket.connect

    def recording_connect(sock, address):
        contacted.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    body = surepay_body()
    with django_capture_on_commit_callbacks(execute=True):
        response = post_webhook(client, body, signature=sign(body))
    assert response.status_code == 202
    assert fake_directory.requests == []
    assert all(address[1] in (5432, 6379) for address in contacted if isinstance(address, tuple)), contacted
