"""Signed outbound webhooks to a school's own system, received by a real HTTP server that checks
every signature with the ``standardwebhooks`` package (tests/events/conftest.py)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from events import outbound
from events.models import EndpointDelivery, WebhookEndpoint
from events.relay import Relay
from events.sinks.endpoints import EndpointSink
from payments.models import AuditLog, OutboxEvent
from tests.events.conftest import apply_event
from tests.factories import AccountFactory, SchoolFactory


@pytest.fixture
def endpoint(school, receiver):
    endpoint, secret = outbound.endpoint_create(school=school, url=receiver.url, event_types=["payment.*"])
    receiver.secrets = [secret]
    return endpoint


def relay_to_endpoints() -> int:
    return Relay(sinks=[EndpointSink()]).publish_batch()


def send_all() -> list[str]:
    return [
        outbound.delivery_send(delivery_id=pk)
        for pk in EndpointDelivery.objects.filter(status="pending").order_by("pk").values_list("pk", flat=True)
    ]


def test_the_secret_is_a_standard_webhooks_secret_stored_encrypted(endpoint, receiver):
    (secret,) = receiver.secrets
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM events_webhookendpoint WHERE id = %s", [endpoint.pk])
        stored = cursor.fetchone()[0]
    assert secret not in stored and stored
    assert AuditLog.objects.filter(action="webhook_endpoint.created", target_id=str(endpoint.pk)).exists()


def test_a_payment_event_is_delivered_signed_and_logged(account, endpoint, receiver):
    apply_event(account, event_id="e1", txn="txn-1")
    assert relay_to_endpoints() == 2
    assert send_all() == ["delivered", "delivered"]

    first, second = receiver.received
    assert first.verified and second.verified, first.error
    assert [r.json()["type"] for r in receiver.received] == ["payment.created", "payment.succeeded"]
    outbox = OutboxEvent.objects.get(event_type="payment.succeeded")
    assert second.headers["webhook-id"] == str(outbox.event_id) == second.json()["id"]
    assert abs(int(second.headers["webhook-timestamp"]) - timezone.now().timestamp()) < 60
    assert second.json()["data"]["amount_minor"] == 100_000 and second.json()["data"]["currency"] == "UGX"

    delivery = EndpointDelivery.objects.get(event_id=outbox.event_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    (attempt,) = delivery.attempt_log.all()
    assert attempt.status_code == 200 and json.loads(attempt.response_body) == {"ok": True}


def test_the_relay_handing_an_event_over_twice_makes_one_delivery(account, endpoint):
    apply_event(account, event_id="e1", txn="txn-1")
    rows = list(OutboxEvent.objects.all())
    relay_to_endpoints()
    OutboxEvent.objects.filter(pk__in=[r.pk for r in rows]).update(published_at=None)  # as after a crash
    relay_to_endpoints()
    assert EndpointDelivery.objects.count() == 2


def test_an_endpoint_gets_only_its_schools_events_of_the_types_it_wants(account, endpoint, receiver):
    other = AccountFactory(school=SchoolFactory(code="other"), provider="surepay")
    outbound.endpoint_create(school=other.school, url=receiver.url + "/other", event_types=["webhook.*"])
    apply_event(other, event_id="e-other", txn="txn-o")
    apply_event(account, event_id="e1", txn="txn-1")
    relay_to_endpoints()
    assert set(EndpointDelivery.objects.values_list("endpoint_id", flat=True)) == {endpoint.pk}


def test_failures_are_retried_on_the_specification_schedule_then_given_up(account, endpoint, receiver, settings):
    receiver.answers = [500] * 20
    apply_event(account, event_id="e1", txn="txn-1", status="pending")
    relay_to_endpoints()
    delivery = EndpointDelivery.objects.get()  # payment.created only
    waits = []
    for _ in range(8):
        before = timezone.now()
        outcome = outbound.delivery_send(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            waits.append(round((delivery.next_attempt_at - before).total_seconds()))
            assert outbound.delivery_send(delivery_id=delivery.pk) == "not due"  # not before its time
            EndpointDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert outcome == "failed" and delivery.status == "failed" and delivery.attempts == 8
    assert delivery.last_status_code == 500 and delivery.attempt_log.count() == 8
    assert all(r.verified for r in receiver.received)


def test_a_bad_answer_or_no_answer_is_logged(account, endpoint, receiver, settings):
    settings.OUTBOUND_WEBHOOK_TIMEOUT_SECONDS = 2
    receiver.answers = [302]
    apply_event(account, event_id="e1", txn="txn-1", status="pending")
    relay_to_endpoints()
    delivery = EndpointDelivery.objects.get()
    assert outbound.delivery_send(delivery_id=delivery.pk) == "retry in 5s"  # a redirect is not followed
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url="http://127.0.0.1:9/nothing")
    EndpointDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert outbound.delivery_send(delivery_id=delivery.pk) == "retry in 300s"
    answers = list(delivery.attempt_log.order_by("pk").values_list("status_code", "error"))
    assert answers[0] == (302, "") and answers[1][0] is None and answers[1][1].startswith("ConnectError")


def test_any_answer_is_logged_safely_and_cut_short(account, endpoint, receiver):
    receiver.answers = [500]
    receiver.bodies = [b"\x00\xff" + b"x" * 1_000_000]
    apply_event(account, event_id="e1", txn="txn-1", status="pending")
    relay_to_endpoints()
    delivery = EndpointDelivery.objects.get()
    assert outbound.delivery_send(delivery_id=delivery.pk) == "retry in 5s"
    attempt = delivery.attempt_log.get()
    assert attempt.status_code == 500 and len(attempt.response_body) == 1000
    assert attempt.response_body.startswith("\ufffd\ufffdxxx")


def test_rotation_signs_with_both_secrets_until_the_old_one_expires(account, endpoint, receiver, settings):
    (old,) = receiver.secrets
    new = outbound.endpoint_secret_rotate(endpoint_id=endpoint.pk)
    assert new != old and new.startswith("whsec_")
    apply_event(account, event_id="e1", txn="txn-1")
    relay_to_endpoints()
    send_all()
    # A receiver that still knows only the old secret, one that knows only the new one.
    first = receiver.received[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    receiver.secrets = [new]
    receiver.handle(first.headers, first.body)
    assert receiver.received[-1].verified
    # Past the overlap only the new secret signs: a receiver with the old one refuses.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    receiver.secrets = [old]
    EndpointDelivery.objects.update(status="pending", next_attempt_at=None)
    assert outbound.delivery_send(delivery_id=EndpointDelivery.objects.first().pk).startswith("retry in")
    assert receiver.received[-1].verified is False
    assert len(receiver.received[-1].headers["webhook-signature"].split(" ")) == 1


def test_an_endpoint_failing_for_days_is_disabled_and_staff_are_told(account, endpoint, receiver, admin_client):
    receiver.answers = [503] * 5
    apply_event(account, event_id="e1", txn="txn-1")
    relay_to_endpoints()
    first, second = EndpointDelivery.objects.order_by("pk")
    assert outbound.delivery_send(delivery_id=first.pk) == "retry in 5s"
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.failing_since is not None
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=5, minutes=1))
    assert outbound.delivery_send(delivery_id=second.pk) == "retry in 5s"
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_reason == "Every delivery failed for 5 days."
    assert set(EndpointDelivery.objects.values_list("status", flat=True)) == {"cancelled"}
    audit = AuditLog.objects.get(action="webhook_endpoint.disabled")
    assert audit.school_id == endpoint.school_id and audit.details["cancelled"] == 2
    page = admin_client.get("/admin/dashboard/").content.decode()
    assert "Outbound webhooks: endpoints disabled" in page and endpoint.url in page

    # New events no longer go to it; staff enable it again, and replay what was cancelled.
    apply_event(account, event_id="e2", txn="txn-1", refunds=[("r1", 100)])
    relay_to_endpoints()
    assert EndpointDelivery.objects.count() == 2
    outbound.endpoint_enable(endpoint_id=endpoint.pk, actor=None)
    receiver.answers = []  # fixed
    staff = type("Staff", (), {"get_username": lambda self: "bursar"})()
    assert outbound.delivery_replay(delivery_id=first.pk, actor=staff) == "delivered"
    first.refresh_from_db()
    assert first.status == "succeeded" and first.attempt_log.filter(replay=True).count() == 1
    assert AuditLog.objects.filter(action="webhook_delivery.replayed", actor="bursar").exists()


def test_a_success_resets_the_failure_clock(account, endpoint, receiver):
    receiver.answers = [500]
    apply_event(account, event_id="e1", txn="txn-1")
    relay_to_endpoints()
    first, second = EndpointDelivery.objects.order_by("pk")
    outbound.delivery_send(delivery_id=first.pk)
    outbound.delivery_send(delivery_id=second.pk)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


@pytest.mark.parametrize(
    ("url", "allow_http", "allow_private", "refused"),
    [
        ("http://example.org/hook", False, False, "must use https"),
        ("https://127.0.0.1/hook", False, False, "internal address (127.0.0.1)"),
        ("https://10.1.2.3/hook", False, False, "internal address (10.1.2.3)"),
        ("https://[::1]/hook", False, False, "internal address (::1)"),
        ("ftp://example.org/hook", True, True, "absolute https"),
        ("https://127.0.0.1/hook", False, True, None),
        ("http://127.0.0.1/hook", True, True, None),
    ],
)
def test_outbound_destinations_are_checked(settings, url, allow_http, allow_private, refused):
    settings.OUTBOUND_WEBHOOK_ALLOW_HTTP = allow_http
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES = allow_private
    if refused is None:
        outbound.destination_check(url)
    else:
        with pytest.raises(outbound.DestinationRefused, match=refused.replace("(", r"\(").replace(")", r"\)")):
            outbound.destination_check(url)


def test_a_refused_destination_is_an_attempt_that_failed(account, endpoint, receiver, settings):
    apply_event(account, event_id="e1", txn="txn-1", status="pending")
    relay_to_endpoints()
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    delivery = EndpointDelivery.objects.get()
    assert outbound.delivery_send(delivery_id=delivery.pk) == "retry in 5s"
    assert delivery.attempt_log.get().error.startswith("refused: The host 127.0.0.1 resolves to an internal address")
    assert receiver.received == []


def test_the_sweep_enqueues_deliveries_whose_message_was_lost(account, endpoint, settings, django_capture_on_commit_callbacks):
    apply_event(account, event_id="e1", txn="txn-1", status="pending")
    relay_to_endpoints()
    assert outbound.deliveries_sweep() == []  # fresh: its message is on its way
    EndpointDelivery.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    assert outbound.deliveries_sweep() == list(EndpointDelivery.objects.values_list("pk", flat=True))



def test_end_to_end_a_webhook_reaches_the_schools_system(client, account, receiver, fake_directory, celery_worker):
    """A provider's webhook through the real endpoint, a real Celery worker on Redis, the relay,
    and the delivery task: the school's system receives the signed payment events."""
    from django.core.management import call_command

    from tests.conftest import post_webhook, sign, surepay_body, wait_for

    fake_directory.add_student("ng", "surepay", "prov-001", "STU-1", "Amina N.")
    _, secret = outbound.endpoint_create(school=account.school, url=receiver.url, event_types=["payment.*"])
    receiver.secrets = [secret]
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    wait_for(lambda: OutboxEvent.objects.filter(event_type="payment.mapped").exists(), timeout=20)
    call_command("outbox_relay", "--once")
    wait_for(lambda: len(receiver.received) == 3, timeout=20)
    assert all(r.verified for r in receiver.received)
    assert sorted(r.json()["type"] for r in receiver.received) == ["payment.created", "payment.mapped", "payment.succeeded"]
    wait_for(lambda: EndpointDelivery.objects.filter(status="succeeded").count() == 3, timeout=10)
