"""The retention job: stored webhook bodies and headers of finished events go after
WEBHOOK_BODY_RETENTION_DAYS; the events' metadata, payments and audit log stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from ops.services import webhook_bodies_purge
from ops.tasks import webhook_bodies_purge_task
from payments.models import AuditLog, Payment, WebhookEvent
from tests.conftest import post_webhook, process_pending, sign, surepay_body


def old_event(account, *, event_id, status, days_ago, **fields):
    return WebhookEvent.objects.create(
        account=account,
        external_event_id=event_id,
        event_type="payment",
        status=status,
        raw_body='{"event_id": "%s"}' % event_id,
        headers={"X-Signature": "abc", "X-School-Code": "ng"},
        received_at=timezone.now() - timedelta(days=days_ago),
        result="stored for the test",
        **fields,
    )


def purged(event: WebhookEvent) -> bool:
    event.refresh_from_db()
    return event.raw_body == "" and event.headers == {} and event.body_purged_at is not None


def test_default_is_ninety_days_and_it_runs_daily_from_beat():
    assert settings.WEBHOOK_BODY_RETENTION_DAYS == 90
    entry = settings.CELERY_BEAT_SCHEDULE["webhook-bodies-purge"]
    assert entry["task"] == webhook_bodies_purge_task.name
    assert entry["schedule"].hour == {3} and entry["schedule"].minute == {17}


def test_only_finished_events_past_the_retention_lose_their_bodies(account):
    processed = old_event(account, event_id="old-processed", status="processed", days_ago=91)
    failed = old_event(account, event_id="old-failed", status="failed", days_ago=120, last_error="gave up")
    rejected = old_event(account, event_id=None, status="rejected", days_ago=200, errors=[{"field": "amount", "message": "bad"}])
    superseded = old_event(account, event_id=None, status="superseded", days_ago=100)  # a replayed dead letter
    pending = old_event(account, event_id="old-pending", status="pending", days_ago=150)
    processing = old_event(account, event_id="old-processing", status="processing", days_ago=150)
    recent = old_event(account, event_id="recent-processed", status="processed", days_ago=89)

    assert webhook_bodies_purge() == 4
    assert purged(processed) and purged(failed) and purged(rejected) and purged(superseded)
    for kept in (pending, processing, recent):
        assert not purged(kept)
        assert kept.raw_body and kept.headers == {"X-Signature": "abc", "X-School-Code": "ng"}
    # Metadata stays.
    failed.refresh_from_db()
    rejected.refresh_from_db()
    assert (failed.external_event_id, failed.status, failed.last_error, failed.result) == (
        "old-failed", "failed", "gave up", "stored for the test"
    )
    assert rejected.errors == [{"field": "amount", "message": "bad"}]


def test_payments_and_audit_log_stay(client, account, fake_directory):
    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    process_pending()
    event = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(days=100))
    payment_before = Payment.objects.values().get()
    audit_before = list(AuditLog.objects.order_by("pk").values())

    assert webhook_bodies_purge() == 1
    assert purged(event) and event.payment_id == payment_before["id"]
    assert Payment.objects.values().get() == payment_before
    audit_after = list(AuditLog.objects.order_by("pk").values())
    assert audit_after[: len(audit_before)] == audit_before
    (run,) = audit_after[len(audit_before) :]
    assert run["action"] == "webhook.bodies_purged" and run["details"]["events"] == 1


def test_works_in_batches_and_a_second_run_finds_nothing(account):
    events = [old_event(account, event_id=f"evt-{n}", status="processed", days_ago=100) for n in range(5)]
    assert webhook_bodies_purge(batch_size=2) == 5
    assert all(purged(event) for event in events)
    first_purge = {event.pk: event.body_purged_at for event in events}
    assert webhook_bodies_purge(batch_size=2) == 0
    for event in events:
        event.refresh_from_db()
        assert event.body_purged_at == first_purge[event.pk]  # not touched again


def test_the_retention_setting_is_used(account, settings):
    event = old_event(account, event_id="ten-days", status="processed", days_ago=10)
    assert webhook_bodies_purge() == 0
    settings.WEBHOOK_BODY_RETENTION_DAYS = 7
    assert webhook_bodies_purge() == 1 and purged(event)
    with pytest.raises(ValueError):
        webhook_bodies_purge(retention_days=0)


def test_the_celery_task_runs_the_purge(account):
    event = old_event(account, event_id="by-task", status="processed", days_ago=365)
    assert webhook_bodies_purge_task.apply().get() == 1
    assert purged(event)
