"""Reads for the ops endpoints."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from payments.models import MappingStatus, Payment, WebhookEvent
from payments.state import PaymentStatus

UNFINISHED = (WebhookEvent.Status.PENDING, WebhookEvent.Status.PROCESSING)


def sync_backlog_queryset():
    """Succeeded payments mapped to a student that are not in QuickBooks yet, or None while
    the Payment model has no QuickBooks sync fields (``qbo_txn_id``, from the QuickBooks sync
    work): without them "not in QuickBooks yet" cannot be told, and no number is better than a
    wrong one."""
    field_names = {field.name for field in Payment._meta.get_fields()}
    if "qbo_txn_id" not in field_names:
        return None
    return Payment.objects.filter(
        Q(qbo_txn_id__isnull=True) | Q(qbo_txn_id=""),
        status=PaymentStatus.SUCCEEDED,
        mapping_status=MappingStatus.MAPPED,
    )


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
        sync_backlog = sync_backlog_queryset()
        return {
            "unfinished": {str(status): count for status, count in unfinished.items()},
            "oldest_unfinished_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
            "sync_backlog": sync_backlog.count() if sync_backlog is not None else None,
        }
