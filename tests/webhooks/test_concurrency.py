"""Real concurrent deliveries against a live server on PostgreSQL."""

import threading

import httpx
import pytest
from django.db import connection

from payments.models import AuditLog, Payment, WebhookEvent
from tests.conftest import sign, surepay_body, wait_for
from webhooks.services import webhook_event_run

pytestmark = pytest.mark.django_db(transaction=True)


def fire_concurrently(url: str, requests: list[tuple[bytes, dict]]) -> list[httpx.Response]:
    """Send every request at the same moment, one thread each."""
    barrier = threading.Barrier(len(requests))
    responses: list[httpx.Response | Exception] = [None] * len(requests)

    def send(index, body, headers):
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            try:
                responses[index] = client.post(url, content=body, headers=headers)
            except Exception as exc:  # surfaced by the assertion below
                responses[index] = exc

    threads = [threading.Thread(target=send, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(response, httpx.Response) for response in responses), responses
    return responses


def headers_for(body: bytes) -> dict:
    return {"Content-Type": "application/json", "X-School-Code": "ng", "X-Signature": sign(body)}


def test_twenty_concurrent_deliveries_of_one_new_event(live_server, account, fake_directory, celery_worker):
    body = surepay_body()
    responses = fire_concurrently(f"{live_server.url}/api/webhooks/surepay", [(body, headers_for(body))] * 20)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 19 + [202]
    assert {response.json()["detail"] for response in responses} == {"Webhook accepted", "Duplicate webhook ignored"}
    assert WebhookEvent.objects.count() == 1
    # The worker applies the one stored event: one payment, one audit entry.
    wait_for(lambda: WebhookEvent.objects.filter(status="processed").exists())
    assert Payment.objects.count() == 1
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1


def test_workers_racing_on_events_of_one_new_transaction_make_one_payment(live_server, account, fake_directory):
    """Pending and succeeded events of one transaction, processed by ten workers at the same
    moment: one payment, every event applied to it once, and it ends succeeded."""
    requests = []
    for index in range(10):
        status = "SUCCEEDED" if index % 2 else "PENDING"
        body = surepay_body(event_id=f"evt-{index}", status=status)
        requests.append((body, headers_for(body)))
    responses = fire_concurrently(f"{live_server.url}/api/webhooks/surepay", requests)
    assert [response.status_code for response in responses] == [202] * 10

    event_ids = list(WebhookEvent.objects.values_list("pk", flat=True))
    barrier = threading.Barrier(len(event_ids))
    results = {}

    def work(event_id):
        barrier.wait()
        try:
            results[event_id] = webhook_event_run(event_id=event_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(event_id,)) for event_id in event_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    payment = Payment.objects.get()
    assert payment.status == "succeeded"
    assert set(WebhookEvent.objects.values_list("payment_id", flat=True)) == {payment.pk}
    assert WebhookEvent.objects.filter(applied_at__isnull=False).count() == 10
    assert AuditLog.objects.filter(action="payment.webhook").count() == 10
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
