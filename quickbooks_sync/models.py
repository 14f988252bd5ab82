"""QuickBooks Online state: one connection per school, the sync state of every document a
payment becomes, and which QuickBooks customer stands for which student.

The sync state lives here, not on ``payments.Payment``: a one-to-one record for the payment's
first document (``QboPaymentSync``: the money received) and one record per later change of what
the school holds (``QboAdjustmentSync``: a refund, a chargeback, a correction). Duplicates are made
impossible by constraints: one record per payment, one per (payment, movement, sequence), one
QuickBooks document per record.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.fields import EncryptedTextField
from payments.models import Payment, School, Student


class QboConnection(models.Model):
    """A school's authorization to write to one QuickBooks company (realm)."""

    class Status(models.TextChoices):
        CONNECTED = "connected", "Connected"
        NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"
        DISCONNECTED = "disconnected", "Disconnected"

    school = models.OneToOneField(School, on_delete=models.PROTECT, related_name="qbo_connection")
    realm_id = models.CharField("company (realm) id", max_length=32, blank=True, default="")
    company_name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DISCONNECTED)
    status_reason = models.TextField(blank=True, default="")
    # Tokens: Fernet-encrypted at rest, never displayed or logged.
    access_token = EncryptedTextField(blank=True, default="")
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_token = EncryptedTextField(blank=True, default="")
    refresh_token_expires_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every write of the tokens: a refresh only stores its result if nobody else
    # stored newer tokens meanwhile (compare-and-set under the row lock).
    token_version = models.PositiveIntegerField(default=0)
    tokens_refreshed_at = models.DateTimeField(null=True, blank=True)
    # Chosen by staff after connecting.
    item_id = models.CharField("sales item id", max_length=32, blank=True, default="")
    item_name = models.CharField("sales item", max_length=200, blank=True, default="")
    deposit_account_id = models.CharField(max_length=32, blank=True, default="")
    deposit_account_name = models.CharField("deposit account", max_length=200, blank=True, default="")
    # Read from the company's preferences: a payment in another currency is never posted as if
    # it were in this one.
    home_currency = models.CharField(max_length=3, blank=True, default="")
    multicurrency = models.BooleanField(default=False)
    # Payments created before this moment are not sent automatically (a school connecting today
    # does not want years of history posted); staff can move it back.
    sync_since = models.DateTimeField(default=timezone.now)
    connected_at = models.DateTimeField(null=True, blank=True)
    connected_by = models.CharField(max_length=150, blank=True, default="")
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "QuickBooks connection"
        ordering = ["school__code"]

    def __str__(self) -> str:
        # Never a token: this string ends up in logs and admin pages.
        return f"QuickBooks {self.realm_id or '-'} @ {self.school.code} ({self.status})"

    def __repr__(self) -> str:
        return f"<QboConnection {self.pk} {self.school_id} {self.status}>"

    @property
    def is_configured(self) -> bool:
        return bool(self.item_id and self.deposit_account_id and self.home_currency)

    @property
    def can_sync(self) -> bool:
        return self.status == self.Status.CONNECTED and self.is_configured


class QboCustomer(models.Model):
    """The QuickBooks customer that stands for a student in one company. Custom fields cannot
    be queried (docs/reference/quickbooks.md §2.5), so the id is kept here, with the display name as fallback."""

    school = models.ForeignKey(School, on_delete=models.PROTECT, db_index=False)
    realm_id = models.CharField(max_length=32)
    student = models.ForeignKey(Student, on_delete=models.PROTECT, related_name="qbo_customers")
    customer_id = models.CharField(max_length=32)
    display_name = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "QuickBooks customer"
        constraints = [
            models.UniqueConstraint(fields=["realm_id", "student"], name="uniq_qbo_customer_per_student"),
            models.UniqueConstraint(fields=["realm_id", "customer_id"], name="uniq_qbo_customer_id"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} = QBO customer {self.customer_id}"


class SyncStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Sync failed"
    PAUSED = "paused", "Paused"


class SyncRecord(models.Model):
    """What is common to syncing a payment and a refund: a visible state machine.

    ``pending`` (waiting for its turn or a retry at ``next_attempt_at``) -> ``synced``, or
    ``failed`` (a fault Intuit will not accept, or retries used up; staff retry it), or
    ``paused`` (the school's authorization is gone; resumes on reconnect, no attempt spent).

    ``in_doubt`` is set before a request is sent and cleared when its outcome is known: a record
    found in doubt is looked up in QuickBooks before anything is sent again. ``request_body``
    keeps what was sent, so a retry in doubt repeats it exactly under the same ``request_id``.
    """

    school = models.ForeignKey(School, on_delete=models.PROTECT, db_index=False)
    status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    # The company the document is (being) written to, fixed when it is first sent.
    realm_id = models.CharField(max_length=32, blank=True, default="")
    txn_type = models.CharField("QuickBooks type", max_length=32, blank=True, default="")
    txn_id = models.CharField("QuickBooks id", max_length=32, blank=True, default="")
    txn_date = models.DateField()
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    request_id = models.CharField(max_length=50, blank=True, default="")
    # Bumped only after QuickBooks refused a request (then nothing was created): the next
    # request gets a new requestid, as a replay of the old one would repeat the refusal.
    revision = models.PositiveIntegerField(default=0)
    request_body = models.JSONField(null=True, blank=True)
    in_doubt = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_code = models.CharField(max_length=16, blank=True, default="")
    intuit_tid = models.CharField(max_length=64, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # What was applied: invoice ids and amounts, for staff.
    details = models.JSONField(blank=True, default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class QboPaymentSync(SyncRecord):
    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="qbo_sync")
    customer_id = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        verbose_name = "payment sync"
        constraints = [
            models.UniqueConstraint(
                fields=["realm_id", "txn_type", "txn_id"], condition=~Q(txn_id=""), name="uniq_qbo_payment_txn"
            )
        ]
        indexes = [
            models.Index(
                fields=["school", "status", "next_attempt_at"],
                condition=Q(status__in=["pending", "paused"]),
                name="qbo_payment_sync_open",
            ),
            models.Index(fields=["status", "updated_at"], name="qbo_payment_sync_status"),
            # A school's list in its order (newest first), read backwards: no sort.
            models.Index(fields=["school", "created_at", "id"], name="qbo_sync_school_created"),
            models.Index(fields=["created_at", "id"], name="qbo_sync_created"),  # every school's
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sync of payment {self.payment_id}: {self.status}"

    kind = "payment"


class QboAdjustmentSync(SyncRecord):
    """A document after a payment's first one, for one money movement of its ledger
    (``payments.ledger.Movement``): money that went back (a refund or a chargeback: a
    RefundReceipt) or came in again (a refund that failed after it was booked, an amount the
    provider corrected: a SalesReceipt).

    ``movement`` is the ledger's stable key for the movement (``refund:<refund id>``,
    ``chargeback:<dispute id>``, ``charge``) and ``sequence`` counts the documents of one
    movement: 0 for the movement itself, more only when a booked movement later changed. So each
    money movement reaches QuickBooks once, whatever order its events came in, and the sum of a
    payment's documents is always its net."""

    class Direction(models.TextChoices):
        OUT = "out", "Money out (RefundReceipt)"
        IN = "in", "Money in (SalesReceipt)"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="qbo_adjustments")
    movement = models.CharField(max_length=300)
    sequence = models.PositiveIntegerField(default=0)
    direction = models.CharField(max_length=3, choices=Direction.choices)

    class Meta:
        verbose_name = "refund or adjustment sync"
        constraints = [
            models.UniqueConstraint(fields=["payment", "movement", "sequence"], name="uniq_qbo_adjustment_step"),
            models.UniqueConstraint(
                fields=["realm_id", "txn_type", "txn_id"], condition=~Q(txn_id=""), name="uniq_qbo_adjustment_txn"
            ),
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="qbo_adjustment_amount_positive"),
        ]
        indexes = [
            models.Index(
                fields=["school", "status", "next_attempt_at"],
                condition=Q(status__in=["pending", "paused"]),
                name="qbo_adjustment_sync_open",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sync of {self.movement} ({self.direction} {self.amount_minor}) of payment {self.payment_id}: {self.status}"

    @property
    def kind(self) -> str:
        """What it is to staff: a refund, a chargeback, or a correction."""
        base = self.movement.split(":", 1)[0]
        return base if self.direction == self.Direction.OUT and base in ("refund", "chargeback") else "correction"

    @property
    def step(self) -> str:
        """Names this document among the payment's, in its request id and its marker."""
        return f"{self.movement}#{self.sequence}"

    @property
    def signed_minor(self) -> int:
        return self.amount_minor if self.direction == self.Direction.IN else -self.amount_minor
