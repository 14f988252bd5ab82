"""What we send parents: pay links, reminders and receipts (one ``Notice`` row per message), and
the receipts themselves (``PaymentReceipt``, reached by an unguessable token)."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from payments.models.money import Payment, PaymentRequest
from payments.models.schools import School


def new_receipt_token() -> str:
    """The secret in a receipt's address: 192 random bits, URL-safe. Whoever holds it may read
    the receipt (who paid, for which student, how much)."""
    return secrets.token_urlsafe(24)


class PaymentReceipt(models.Model):
    """The receipt of one settled payment, issued once (``payments.services.notices``)."""

    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="receipt_record")
    token = models.CharField(max_length=64, unique=True, default=new_receipt_token, editable=False)
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"Receipt {self.number}"

    @property
    def number(self) -> str:
        """What the parent quotes to the school: the school's code and the receipt's row."""
        return f"{self.payment.school.code.upper()}-{self.pk:06d}"

    @property
    def path(self) -> str:
        return f"/receipts/{self.token}/"

    @property
    def url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}{self.path}"


class Notice(models.Model):
    """One message to a parent: a pay link staff sent, a reminder, a receipt. Its state machine:
    ``queued`` -> ``sending`` (claimed by one worker) -> ``sent`` | ``failed`` | ``in_doubt``; a
    transient failure puts it back to ``queued`` with a later ``next_attempt_at``.

    A message is sent at most once: only the worker that moved the row from ``queued`` to
    ``sending`` sends it, and a send whose outcome is unknown (a timeout after the request went
    out) becomes ``in_doubt``, never retried by itself.
    """

    class Kind(models.TextChoices):
        PAY_LINK = "pay_link", "Pay link"
        REMINDER_BEFORE = "reminder_before", "Reminder before the due date"
        REMINDER_AFTER = "reminder_after", "Reminder after the due date"
        RECEIPT = "receipt", "Payment confirmation and receipt"

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        IN_DOUBT = "in_doubt", "In doubt (the answer was lost)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="+", db_index=False)
    payment_request = models.ForeignKey(
        PaymentRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="notices", db_index=False
    )
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="notices", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(max_length=254)
    # The school's day a reminder is for: one reminder per request, channel and day.
    reminder_day = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # The SMS provider's id for the message, or the email's Message-ID.
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    # The API caller's Idempotency-Key: the same call again answers this notice, not a new one.
    client_key = models.CharField(max_length=255, blank=True, default="")
    requested_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Never two reminders for one request on one day (over one channel), however often
            # beat runs or however many beats race: the second INSERT fails.
            models.UniqueConstraint(
                fields=["payment_request", "channel", "reminder_day"],
                condition=Q(kind__in=["reminder_before", "reminder_after"]),
                name="uniq_notice_reminder_per_day",
            ),
            # One confirmation per settled payment and channel, however often settlement is told.
            models.UniqueConstraint(
                fields=["payment", "channel"], condition=Q(kind="receipt"), name="uniq_notice_receipt_per_payment"
            ),
            models.UniqueConstraint(
                fields=["payment_request", "client_key"], condition=~Q(client_key=""), name="uniq_notice_client_key"
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=["reminder_before", "reminder_after"]) | Q(reminder_day__isnull=False),
                name="notice_reminder_has_day",
            ),
        ]
        indexes = [
            models.Index(fields=["payment_request", "created_at"], name="notice_request"),
            models.Index(fields=["payment", "created_at"], condition=Q(payment__isnull=False), name="notice_payment"),
            # The sweep's look-up: only notices still to send.
            models.Index(fields=["next_attempt_at"], condition=Q(status="queued"), name="notice_queued_due"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.get_channel_display()} to {self.recipient} ({self.status})"
