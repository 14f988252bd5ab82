"""What arrived and what was done: webhook events (the inbox) and the append-only audit log."""

from __future__ import annotations

from django.db import models
from django.db.models import JSONField, Q, Value
from django.utils import timezone

from payments.models.money import Payment
from payments.models.schools import ProviderAccount, School


class WebhookEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected (dead letter)"
        # A dead letter that parsed on replay, but whose event the provider had redelivered and
        # we had stored already: kept for the record, never applied (webhooks.services).
        SUPERSEDED = "superseded", "Superseded (stored again)"
        # A genuine event with nothing to act on (a payout, a customer update, the other mode):
        # kept with the reason in ``result``, never processed.
        IGNORED = "ignored", "Ignored (nothing to act on)"

    # The school is the account's: not copied here, as every column, index and foreign-key check
    # costs CPU on the hot insert. No single-column index: (account, event id) and
    # (account, received_at) lead with it. Columns the request path does not set have database
    # defaults, so its INSERT names only what it knows (webhooks.services).
    account = models.ForeignKey(
        ProviderAccount, on_delete=models.PROTECT, related_name="webhook_events", db_index=False
    )
    # NULL for a dead letter: a rejected delivery must not block the provider's corrected
    # redelivery of the same event id.
    external_event_id = models.CharField(max_length=255, null=True, blank=True)
    event_type = models.CharField(max_length=100, blank=True, default="", db_default="")
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="webhook_events", db_index=False
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_default=Status.PENDING
    )
    raw_body = models.TextField(blank=True, default="")
    headers = models.JSONField(blank=True, default=dict)
    # Only dead letters carry it: the key that stops a retried invalid body piling up.
    body_sha256 = models.CharField(max_length=64, blank=True, default="", db_default="")
    body_purged_at = models.DateTimeField(null=True, blank=True)
    errors = models.JSONField(
        blank=True, default=list, db_default=Value([], JSONField()), help_text="Field errors of a dead letter."
    )
    last_error = models.TextField(blank=True, default="", db_default="")
    result = models.CharField(max_length=200, blank=True, default="", db_default="")
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set in the same transaction that applies the event to its payment: never applied twice.
    applied_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "external_event_id"], name="uniq_webhook_event_per_account"),
            # A provider retrying the same invalid body does not pile up dead letters.
            models.UniqueConstraint(
                fields=["account", "body_sha256"],
                condition=Q(status="rejected"),
                name="uniq_dead_letter_per_body",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["pending", "processing"]),
                name="webhook_event_unfinished",
            ),
            models.Index(fields=["account", "received_at"]),
            # Partial: an event is stored before it is linked to its payment.
            models.Index(fields=["payment"], condition=Q(payment__isnull=False), name="webhook_event_payment"),
            # A superuser's list of every school's events, newest first: else each page sorts
            # them all. (A school's list goes through its accounts' (account, received_at).)
            models.Index(fields=["received_at", "id"], name="webhook_event_received"),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.account.provider} {self.external_event_id or '(dead letter)'}"

    @property
    def provider(self) -> str:
        return self.account.provider


class AuditLog(models.Model):
    """Append-only record of who did what to which object."""

    class ActorType(models.TextChoices):
        SYSTEM = "system", "System"
        PROVIDER = "provider", "Provider"
        STAFF = "staff", "Staff"
        PARENT = "parent", "Parent"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    school = models.ForeignKey(School, on_delete=models.PROTECT, null=True, blank=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    details = models.JSONField(blank=True, default=dict)

    class Meta:
        indexes = [
            models.Index(fields=["target_type", "target_id", "created_at"]),
            # A school's audit log in its order (newest first), read backwards: no sort.
            models.Index(fields=["school", "created_at", "id"], name="audit_log_school_created"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("AuditLog entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("AuditLog entries are append-only")
