"""The transactional outbox: what happened, written in the transaction that made it happen, for
the relay (``events.relay``) to publish after commit."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from payments.models.schools import School


class OutboxEvent(models.Model):
    """One event for the world outside: written with the change it describes (``payments.outbox``),
    published at least once by the relay, in ``id`` order, then kept a while for replay.

    Columns the webhook request path does not name have database defaults: it writes its row in
    the same statement as the webhook event (``webhooks.services``)."""

    # The id consumers de-duplicate on (the ``id`` of the published envelope). A uuid4, unique by
    # construction: no unique index to pay for on the webhook request path's insert.
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField(default=1)
    # The school whose endpoints receive it. No index (the relay reads by id) and no database
    # constraint: the webhook request path pays for no foreign-key check (schools are never
    # deleted; PROTECT still guards it in Django).
    school = models.ForeignKey(
        School, on_delete=models.PROTECT, null=True, blank=True, db_index=False, db_constraint=False, related_name="+"
    )
    # The stream key: one transaction's events share it and keep their order (Kafka partition).
    key = models.CharField(max_length=255, blank=True, default="")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0, db_default=0)
    last_error = models.TextField(blank=True, default="", db_default="")

    class Meta:
        indexes = [
            # The relay's queue: only what is not published yet.
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="outbox_unpublished"),
            models.Index(fields=["published_at"], condition=Q(published_at__isnull=False), name="outbox_published"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
