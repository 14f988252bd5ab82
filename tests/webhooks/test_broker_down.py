"""With the broker unreachable a webhook is still stored and answered 202; once the broker is
back, the periodic sweep enqueues it and a worker processes it."""

import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from payments.models import MappingStatus, Payment, WebhookEvent
from tests.conftest import free_port, sign, surepay_body, wait_for
from webhooks.services import webhook_events_sweep

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server_without_broker(gunicorn_server):
    """This code served by gunicorn on the test database, with REDIS_URL at a closed port."""
    return gunicorn_server(redis_url=f"redis://127.0.0.1:{free_port()}/0")


def deliver(base_url: str, **fields) -> tuple[httpx.Response, float]:
    body = surepay_body(**fields)
    started = time.monotonic()
    response = httpx.post(
        f"{base_url}/api/webhooks/surepay",
        content=body,
        headers={"Content-Type": "application/json", "X-School-Code": "ng", "X-Signature": sign(body)},
        timeout=30,
    )
    return response, time.monotonic() - started


def test_broker_down_webhook_is_stored_answered_202_and_swept_later(
    account, server_without_broker, fake_directory, celery_worker
):
    response, elapsed = deliver(server_without_broker)
    assert response.status_code == 202
    assert response.json() == {"detail": "Webhook accepted", "event_id": "evt-001", "status": "pending"}
    assert elapsed < 5, f"a broker outage must not hold the provider for {elapsed:.1f}s"
    # Later deliveries skip the dead broker at once instead of waiting for it again.
    response, elapsed = deliver(server_without_broker, event_id="evt-002", external_txn_id="txn-2")
    assert response.status_code == 202
    assert elapsed < 1

    events = WebhookEvent.objects.order_by("pk")
    assert [event.status for event in events] == ["pending", "pending"]

    # The broker is back (this process uses the real Redis): the sweep finds both.
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(minutes=10))
    assert webhook_events_sweep() == [event.pk for event in events]
    wait_for(lambda: WebhookEvent.objects.filter(status="processed").count() == 2, timeout=15)
    assert Payment.objects.count() == 2
    assert set(Payment.objects.values_list("mapping_status", flat=True)) == {MappingStatus.MAPPED}
