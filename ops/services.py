"""Writes of the ops app: the retention of stored webhook bodies."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments.models import AuditLog, WebhookEvent
from payments.services import audit_record

logger = logging.getLogger(__name__)

# Only events whose processing is over: a pending or processing event still needs its body.
FINISHED = (
    WebhookEvent.Status.PROCESSED,
    WebhookEvent.Status.FAILED,
    WebhookEvent.Status.REJECTED,
    WebhookEvent.Status.SUPERSEDED,
)


def webhook_bodies_purge(
    *, retention_days: int | None = None, batch_size: int = 1000, now: datetime | None = None
) -> int:
    """Delete the stored raw body and headers of finished webhook events received more than
    ``retention_days`` (WEBHOOK_BODY_RETENTION_DAYS) ago; returns how many were purged.

    Each event keeps its metadata (provider event id, type, status, result, errors, times) and
    gets ``body_purged_at``; payments and the audit log are not touched. Works in batches, each
    its own short transaction, walking the primary key once (no index on ``received_at`` alone
    is needed). The update repeats the conditions, so an event replayed (back to pending) while
    the job runs keeps its body. One audit entry records the run.
    """
    days = settings.WEBHOOK_BODY_RETENTION_DAYS if retention_days is None else retention_days
    if days < 1:
        raise ValueError("the retention must be at least one day")
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    due = WebhookEvent.objects.filter(
        status__in=FINISHED, received_at__lt=cutoff, body_purged_at__isnull=True
    ).order_by("pk")
    purged, last_pk = 0, 0
    while True:
        batch = list(due.filter(pk__gt=last_pk).values_list("pk", flat=True)[:batch_size])
        if not batch:
            break
        last_pk = batch[-1]
        with transaction.atomic():
            purged += due.filter(pk__in=batch).update(raw_body="", headers={}, body_purged_at=now)
    if purged:
        audit_record(
            action="webhook.bodies_purged",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="retention",
            details={"events": purged, "received_before": cutoff.isoformat(), "retention_days": days},
        )
    logger.info("purged the stored bodies of %d webhook events received before %s", purged, cutoff.isoformat())
    return purged
