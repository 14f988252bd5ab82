"""The schools' own endpoints and what was sent to them (signed outbound webhooks)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.fields import EncryptedTextField
from payments.models import School


class WebhookEndpoint(models.Model):
    """A URL of a school's own system that receives its events, signed per the Standard Webhooks
    specification with a secret only the school holds (shown once, when made)."""

    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True, default="")
    # Event types it receives; a trailing ".*" takes a family ("payment.*"). Empty: every type.
    event_types = models.JSONField(default=list, blank=True)
    # "whsec_" + base64 of the key. The previous one keeps signing beside it until
    # previous_secret_expires_at, so a receiver can switch without losing a delivery.
    secret = EncryptedTextField()
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    # Since when every delivery has failed (cleared by a success): the clock of automatic disabling.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["school", "url"]

    def __str__(self) -> str:
        return f"{self.school.code}: {self.url}"

    def wants(self, event_type: str) -> bool:
        if not self.event_types:
            return True
        return any(
            event_type == wanted or (wanted.endswith(".*") and event_type.startswith(wanted[:-1]))
            for wanted in self.event_types
        )


class EndpointDelivery(models.Model):
    """One event for one endpoint: the exact body signed and sent, its state and its attempts."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (will be tried)"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Failed (every retry used)"
        CANCELLED = "cancelled", "Cancelled (endpoint disabled)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # The webhook-id header: the outbox event's id, the same on every attempt and replay, so the
    # receiver de-duplicates.
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=64)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # The relay may hand the same event over twice (at least once): one delivery each.
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="uniq_delivery_per_endpoint_event"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_due"),
            models.Index(fields=["endpoint", "created_at"]),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.endpoint.url}"


class DeliveryAttempt(models.Model):
    """One POST: when, what came back (status and the start of the body) or what went wrong."""

    delivery = models.ForeignKey(EndpointDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    # Manual replays are attempts too, marked so.
    replay = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error[:40]}"
