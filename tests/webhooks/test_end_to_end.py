"""The whole path as it runs in production: gunicorn answers, Redis carries the work, a Celery
worker applies the event and maps the student through the School Directory."""

import httpx
import pytest

from core.status import PaymentStatus
from payments.models import AuditLog, MappingStatus, Payment, WebhookEvent
from tests.conftest import sign, surepay_body, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_webhook_to_gunicorn_is_processed_by_a_worker(account, gunicorn_server, fake_directory, celery_worker):
    base_url = gunicorn_server()
    body = surepay_body()
    response = httpx.post(
        f"{base_url}/api/webhooks/SUREPAY",
        content=body,
        headers={"Content-Type": "application/json", "X-School-Code": "ng", "X-Signature": sign(body)},
    )
    assert (response.status_code, response.json()) == (
        202,
        {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"},
    )
    # No sweep here: the web process itself published the event to the broker.
    event = wait_for(lambda: WebhookEvent.objects.filter(status="processed").first(), timeout=15)
    assert event.result == "new -> succeeded; student mapped"
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_minor, payment.currency) == (PaymentStatus.SUCCEEDED, 100_000, "UGX")
    assert (payment.mapping_status, payment.student.student_number) == (MappingStatus.MAPPED, "STU-0001")
    assert list(AuditLog.objects.filter(target_id=str(payment.pk)).order_by("id").values_list("action", flat=True)) == [
        "payment.webhook",
        "payment.mapped",
    ]

    again = httpx.post(
        f"{base_url}/api/webhooks/surepay/ng",
        content=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(body)},
    )
    assert (again.status_code, again.json()) == (
        200,
        {"detail": "Duplicate webhook ignored", "event_id": "evt-001", "status": "processed"},
    )
