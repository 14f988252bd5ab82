"""Reads for the ops endpoints."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from payments.models import OutboxEvent, WebhookEvent
from quickbooks_sync.selectors import sync_backlog_counts

UNFINISHED = (WebhookEvent.Status.PENDING, WebhookEvent.Status.PROCESSING)


def backlog_read(*, timeout_ms: int) -> dict:
    """The backlog gauges of ``/metrics``, in one short transaction bounded by a statement
    timeout. The webhook counts use the partial index on unfinished events."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(int(timeout_ms))])
        unfinished_events = WebhookEvent.objects.filter(status__in=UNFINISHED).order_by()
        unfinished = {status: 0 for status in UNFINISHED}
        unfinished.update(unfinished_events.values("status").annotate(count=Count("pk")).values_list("status", "count"))
        oldest = unfinished_events.aggregate(oldest=Min("received_at"))["oldest"]
        # The relay's queue (the partial index on unpublished rows): grows while a sink is down.
        outbox = OutboxEvent.objects.filter(published_at__isnull=True).order_by().aggregate(
            count=Count("pk"), oldest=Min("created_at")
        )
        return {
            "outbox_unpublished": outbox["count"],
            "outbox_oldest_age_seconds": (timezone.now() - outbox["oldest"]).total_seconds() if outbox["oldest"] else 0.0,
            "unfinished": {str(status): count for status, count in unfinished.items()},
            "oldest_unfinished_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
            "sync_backlog": sync_backlog_counts(),
        }
