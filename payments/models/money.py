"""The money: payment requests (pay links), payments, the facts providers report about each
transaction (payments.ledger folds them), and staff refund requests."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy

from core.money import format_minor
from core.status import PaymentStatus
from payments.contact import validate_parent_phone
from payments.ledger import FactKind, FactSource
from payments.models.schools import CURRENCY_CHOICES, MappingStatus, ProviderAccount, School, Student, validate_currency


def new_pay_token() -> str:
    """The secret in a pay link: 192 random bits, URL-safe. Whoever holds it may pay."""
    return secrets.token_urlsafe(24)


class PaymentRequest(models.Model):
    """What a parent is asked to pay, reachable through a pay link with an unguessable token."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        CANCELLED = "cancelled", "Cancelled"

    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="payment_requests", db_index=False)
    student = models.ForeignKey(Student, on_delete=models.PROTECT, related_name="payment_requests")
    description = models.CharField(max_length=200)
    amount_minor = models.BigIntegerField(help_text="In the currency's minor units (UGX has none, KES has cents).")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, validators=[validate_currency])
    due_date = models.DateField(null=True, blank=True)
    # The parent's contact, when staff know it: providers whose checkout needs an email address
    # (Paystack, Flutterwave) get this one, and the pay page asks the parent only when it is blank.
    parent_email = models.EmailField(blank=True, default="")
    parent_phone = models.CharField(max_length=20, blank=True, default="", validators=[validate_parent_phone])
    # Blank: the school's setting. The minimum is in the request's minor units.
    installments_allowed = models.BooleanField(
        null=True, blank=True, help_text="Parents may pay in parts; blank: as the school's setting says."
    )
    installment_min_minor = models.BigIntegerField(
        null=True, blank=True, help_text="Smallest part, in minor units; blank: the school's minimum."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    token = models.CharField(max_length=64, unique=True, default=new_pay_token, editable=False)
    # The payment whose success settled this request (set by payments.services.payment_finalize).
    paid_payment = models.ForeignKey(
        "Payment", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="payment_request_amount_positive"),
            models.CheckConstraint(
                condition=Q(installment_min_minor__isnull=True) | Q(installment_min_minor__gt=0),
                name="payment_request_installment_min_positive",
            ),
            # A paid request always says which payment paid it.
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(paid_payment__isnull=False, paid_at__isnull=False),
                name="payment_request_paid_has_payment",
            ),
        ]
        indexes = [
            models.Index(fields=["school", "status", "created_at"]),
            # A school's list in its default order (newest first), read backwards: no sort.
            models.Index(fields=["school", "created_at", "id"], name="payment_request_school_created"),
            models.Index(fields=["created_at", "id"], name="payment_request_created"),  # every school's
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.description} ({self.amount_display}) for {self.student.student_number}"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    @property
    def pay_path(self) -> str:
        return f"/pay/{self.token}/"

    @property
    def pay_url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}{self.pay_path}"


def receipt_upload_to(instance: Payment, filename: str) -> str:
    # Never the parent's file name: a random name under the school, with the checked extension.
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"receipts/{instance.school.code}/{uuid.uuid4().hex}.{extension}"


class PaymentMethod(models.TextChoices):
    PROVIDER = "provider", "Payment provider"
    # Translated: parents read these on their pages (docs/parents.md).
    BANK_TRANSFER = "bank_transfer", gettext_lazy("Bank transfer")
    MOBILE_MONEY = "mobile_money", gettext_lazy("Mobile money")
    CASH = "cash", gettext_lazy("Cash")


MANUAL_METHODS = (PaymentMethod.BANK_TRANSFER, PaymentMethod.MOBILE_MONEY, PaymentMethod.CASH)


# The provider slug of payments reported by a parent and confirmed by staff (no provider account).
MANUAL_PROVIDER = "manual"


class ReviewFlag(models.TextChoices):
    """Why a succeeded payment needs a person: the money is kept, the request is not settled by it."""

    NONE = "", "Not flagged"
    AMOUNT_MISMATCH = "amount_mismatch", "Amount differs from the request"
    OVERPAYMENT = "overpayment", "Request already paid or cancelled"
    # Not settled, and the provider could not tell us its state through every scheduled check.
    STATUS_UNKNOWN = "status_unknown", "Provider's answer still unknown"


class Payment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Covered by the composite indexes below, which lead with these columns.
    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="payments", db_index=False)
    account = models.ForeignKey(
        ProviderAccount,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payments",
        db_index=False,
    )
    provider = models.SlugField(max_length=32)
    external_txn_id = models.CharField("transaction id", max_length=128, null=True, blank=True)
    # Our own reference, sent to the provider when we start a payment and echoed back by it.
    reference = models.CharField(max_length=64, null=True, blank=True, unique=True)
    # The provider's id for the checkout we started (Stripe session, M-Pesa CheckoutRequestID),
    # known before its transaction id.
    provider_checkout_id = models.CharField(max_length=128, null=True, blank=True)
    # The merchant reference of a payment we did not start (Paystack's own reference): a refund
    # may name its transaction by nothing else.
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    # The charge within the transaction, where the provider tells them apart (a Stripe charge of
    # a PaymentIntent): its refunds and disputes may name only the charge.
    provider_charge_id = models.CharField(max_length=128, blank=True, default="")
    # What an adapter must remember between starting and confirming a payment (no secrets).
    provider_data = models.JSONField(blank=True, default=dict)
    # What was asked for until the payment succeeds; then what was received.
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3, validators=[validate_currency])
    # Derived from the payment's facts (payments.ledger), never written on their own.
    refunded_amount_minor = models.BigIntegerField(default=0)
    refund_pending_amount_minor = models.BigIntegerField(default=0)
    disputed_amount_minor = models.BigIntegerField(default=0)
    charged_back_amount_minor = models.BigIntegerField(default=0)
    status = models.CharField(max_length=24, choices=PaymentStatus.choices, default=PaymentStatus.PENDING)
    status_changed_at = models.DateTimeField(default=timezone.now)
    # When the school first had the money (the day it counts in, and the books' date).
    settled_at = models.DateTimeField(null=True, blank=True)
    # Reports about this payment that cannot all be true, for staff to resolve (payments.ledger).
    ledger_conflict = models.TextField(blank=True, default="")
    provider_student_id = models.CharField(max_length=128, blank=True, default="")
    student = models.ForeignKey(
        Student, on_delete=models.PROTECT, null=True, blank=True, related_name="payments"
    )
    mapping_status = models.CharField(
        max_length=16, choices=MappingStatus.choices, default=MappingStatus.PENDING
    )
    mapping_error = models.TextField(blank=True, default="")
    payer = models.JSONField(blank=True, default=dict)

    # --- Started from a pay link ---
    payment_request = models.ForeignKey(
        PaymentRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="payments"
    )
    method = models.CharField(max_length=16, choices=PaymentMethod.choices, default=PaymentMethod.PROVIDER)
    # Where the payer was sent to pay (empty for an on-phone prompt); kept so a second click reuses it.
    checkout_url = models.TextField(blank=True, default="")
    checkout_created_at = models.DateTimeField(null=True, blank=True)
    checkout_error = models.TextField(blank=True, default="")
    # The janitor: when to ask the provider next, how often it was asked, what went wrong.
    next_check_at = models.DateTimeField(null=True, blank=True)
    status_checks = models.PositiveIntegerField(default=0)
    last_check_error = models.TextField(blank=True, default="")
    # A succeeded payment that did not settle its request as it stands (payments.services.payment_finalize).
    review_flag = models.CharField(max_length=24, choices=ReviewFlag.choices, blank=True, default="")
    review_flag_reason = models.TextField(blank=True, default="")
    # How much of this payment counted toward its request's amount (set once, by
    # payment_finalize under the request's lock): a request's "paid so far" is their sum.
    applied_minor = models.BigIntegerField(default=0)

    # --- Manual payments (bank transfer, mobile money, cash), reviewed by staff ---
    manual_reference = models.CharField(
        max_length=128, blank=True, default="", help_text="The parent's reference: bank or mobile-money id, receipt number."
    )
    receipt = models.FileField(upload_to=receipt_upload_to, blank=True, default="")
    receipt_content_type = models.CharField(max_length=64, blank=True, default="")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True, default="")

    # Risk (payments/risk.py): the score 0-100 and its reasons, recomputed whenever the payment
    # settles; flagged at or above the school's threshold; held from the books while flagged and
    # the school holds high-risk payments, until staff clear it.
    risk_score = models.PositiveSmallIntegerField(null=True, blank=True)
    risk_reasons = models.JSONField(blank=True, default=list)
    risk_flagged = models.BooleanField(default=False)
    risk_held = models.BooleanField(default=False)
    risk_cleared_at = models.DateTimeField(null=True, blank=True)
    risk_cleared_by = models.CharField(max_length=150, blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "external_txn_id"], name="uniq_payment_txn_per_account"),
            models.UniqueConstraint(
                fields=["account", "provider_checkout_id"], name="uniq_payment_checkout_per_account"
            ),
            models.CheckConstraint(condition=Q(amount_minor__gte=0), name="payment_amount_not_negative"),
            models.CheckConstraint(
                condition=Q(refunded_amount_minor__gte=0)
                & Q(charged_back_amount_minor__gte=0)
                & Q(refunded_amount_minor__lte=models.F("amount_minor") - models.F("charged_back_amount_minor")),
                name="payment_money_out_within_amount",
            ),
        ]
        indexes = [
            models.Index(
                fields=["account", "provider_reference"],
                condition=~Q(provider_reference=""),
                name="payment_provider_reference",
            ),
            models.Index(
                fields=["account", "provider_charge_id"],
                condition=~Q(provider_charge_id=""),
                name="payment_provider_charge",
            ),
            models.Index(fields=["school", "status", "created_at"]),
            models.Index(fields=["school", "mapping_status"]),
            # The janitor's look-up: only payments it still has to ask about.
            models.Index(
                fields=["next_check_at"], condition=Q(next_check_at__isnull=False), name="payment_recheck_due"
            ),
            models.Index(
                fields=["school", "review_flag"], condition=~Q(review_flag=""), name="payment_review_flagged"
            ),
            models.Index(fields=["school", "created_at"], condition=Q(risk_flagged=True), name="payment_risk_flagged"),
            # A school's list, API list and export in their order (newest first, then the id the
            # admin adds to make the order total), read backwards: a page costs its own rows, not
            # a sort of every payment of the school.
            models.Index(fields=["school", "created_at", "id"], name="payment_school_created"),
            # The same for a superuser's list of every school: else each page joins and sorts
            # every payment.
            models.Index(fields=["created_at", "id"], name="payment_created"),
            # And their list by status (failed, awaiting review): its count and its page.
            models.Index(fields=["status", "created_at", "id"], name="payment_status_created"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        # What staff read in titles and breadcrumbs: the amount first, then the id to quote.
        return f"{self.amount_display} ({self.external_txn_id or self.reference or self.pk})"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    @property
    def is_manual(self) -> bool:
        return self.method != PaymentMethod.PROVIDER

    @property
    def net_minor(self) -> int:
        """What the school keeps of it: nothing unless it settled."""
        if self.settled_at is None:
            return 0
        return self.amount_minor - self.refunded_amount_minor - self.charged_back_amount_minor


class TransactionFact(models.Model):
    """One thing a source said about a payment's transaction: its outcome, one refund, one
    dispute, or a refunded total (``payments.ledger``). Append-only: the payment is folded from
    its facts, so their order never matters.

    A fact that arrives before its payment exists (a refund delivered ahead of its charge) waits
    with no payment, findable by the transaction's id or reference within its account, and is
    adopted when the payment appears.
    """

    school = models.ForeignKey(School, on_delete=models.PROTECT, db_index=False)
    account = models.ForeignKey(ProviderAccount, on_delete=models.PROTECT, null=True, blank=True, db_index=False)
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="facts", db_index=False
    )
    kind = models.CharField(max_length=16, choices=FactKind.choices)
    # Which refund or dispute (the provider's id for it); "" for the charge and totals.
    key = models.CharField(max_length=255, blank=True, default="")
    # A PaymentStatus for the charge, a RefundStatus or DisputeStatus, "" for a total.
    status = models.CharField(max_length=24, blank=True, default="")
    amount_minor = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    # When it happened by the provider's clock if it says, else when we learnt it.
    occurred_at = models.DateTimeField()
    source = models.CharField(max_length=16, choices=FactSource.choices)
    # Which event, check or person: for staff reading the ledger.
    source_ref = models.CharField(max_length=255, blank=True, default="")
    webhook_event = models.ForeignKey(
        "WebhookEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    # While it waits for its payment: the transaction's ids it will be found by.
    txn_id = models.CharField(max_length=128, blank=True, default="")
    reference = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["payment", "kind"], condition=Q(payment__isnull=False), name="fact_payment"),
            models.Index(
                fields=["account", "txn_id"], condition=Q(payment__isnull=True), name="fact_waiting_txn"
            ),
            models.Index(
                fields=["account", "reference"], condition=Q(payment__isnull=True), name="fact_waiting_reference"
            ),
            # The ledger list of a school in its order: a fact or more for every payment.
            models.Index(fields=["school", "occurred_at", "id"], name="fact_school_occurred"),
        ]
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        amount = format_minor(self.amount_minor, self.currency) if self.amount_minor is not None else ""
        return f"{self.kind} {self.key} {self.status} {amount}".replace("  ", " ").strip()


class RefundRequest(models.Model):
    """Staff asked for money of a payment to go back to the payer (``payments.services``).

    Recorded before the provider is asked, so an answer that never arrives leaves a trace. The
    money itself is the ledger's business: what the provider answers becomes a refund fact keyed
    by its id for the refund, and this request's status follows that fact
    (``refund_requests_sync``). A provider without a refund API gets a refund made by hand,
    recorded as a staff fact keyed ``manual:<id>``.
    """

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested (asking the provider)"
        SUBMITTED = "submitted", "Submitted (the provider is processing it)"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        IN_DOUBT = "in_doubt", "In doubt (the provider's answer was lost)"

    class Method(models.TextChoices):
        PROVIDER = "provider", "Through the provider's refund API"
        MANUAL = "manual", "Made by hand (recorded by staff)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="refund_requests", db_index=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refund_requests", db_index=False)
    method = models.CharField(max_length=16, choices=Method.choices)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3, validators=[validate_currency])
    reason = models.TextField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    # Sent to the provider with every attempt of this refund (derived from the id: the same
    # refund asked for again is recognisable as the same).
    idempotency_key = models.CharField(max_length=64, unique=True)
    # The API caller's Idempotency-Key: the same call again answers this request, not a new one.
    client_key = models.CharField(max_length=255, blank=True, default="")
    provider_refund_id = models.CharField(max_length=255, blank=True, default="")
    # The ledger key of the refund fact that counts for this request (``TransactionFact.key``),
    # and other keys the provider reported the same refund under (webhooks without a refund id,
    # matched by amount): those are closed so the money counts once.
    ledger_key = models.CharField(max_length=255, blank=True, default="")
    matched_keys = models.JSONField(blank=True, default=list)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When to ask the provider again about a refund still on its way (or resend one whose answer
    # was lost, where the provider's idempotency key makes that safe).
    next_check_at = models.DateTimeField(null=True, blank=True)
    checks = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="refund_request_amount_positive"),
            models.UniqueConstraint(
                fields=["payment", "client_key"], condition=~Q(client_key=""), name="uniq_refund_client_key_per_payment"
            ),
            # One refund per payment whose provider answer we do not have: Paystack has no
            # idempotency key, and a second refund beside an unanswered one could not be told
            # apart from it.
            models.UniqueConstraint(
                fields=["payment"], condition=Q(status__in=["requested", "in_doubt"]), name="uniq_unanswered_refund_per_payment"
            ),
        ]
        indexes = [
            models.Index(fields=["payment", "created_at"], name="refund_request_payment"),
            models.Index(fields=["school", "status", "created_at"], name="refund_request_school_status"),
            models.Index(
                fields=["next_check_at"], condition=Q(next_check_at__isnull=False), name="refund_request_recheck_due"
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Refund of {self.amount_display} ({self.get_status_display().lower()})"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    @property
    def unanswered(self) -> bool:
        return self.status in (self.Status.REQUESTED, self.Status.IN_DOUBT)
