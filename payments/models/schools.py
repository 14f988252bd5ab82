"""Schools, their provider accounts, students and staff memberships."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.fields import EncryptedJSONField, EncryptedTextField
from core.money import CURRENCY_EXPONENTS, MoneyError, currency_code
from core.timezones import validate_time_zone

CURRENCY_CHOICES = [(code, code) for code in sorted(CURRENCY_EXPONENTS)]


def default_time_zone() -> str:
    return settings.SCHOOL_TIME_ZONE


def validate_currency(value: str) -> None:
    try:
        if currency_code(value) != value:
            raise ValidationError("Use the upper-case ISO 4217 code.")
    except MoneyError as exc:
        raise ValidationError(str(exc)) from exc


def reminder_days(value: str) -> list[int]:
    """``"7, 1"`` -> ``[1, 7]``: the days of a school's reminder setting. Raises ``ValueError``
    with a message for staff."""
    days = set()
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 90:
            raise ValueError(f"{item!r} is not a number of days from 1 to 90.")
        days.add(int(item))
    return sorted(days)


def validate_reminder_days(value: str) -> None:
    try:
        reminder_days(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class School(models.Model):
    code = models.SlugField(
        max_length=32, unique=True, help_text="Lower-case code; providers send it as X-School-Code."
    )
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, validators=[validate_currency])
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text="An IANA name (Africa/Kampala, Africa/Nairobi): staff and parents read every time in it.",
    )
    active = models.BooleanField(default=True)
    # Reminders of open payment requests with a due date. Off (blank) unless the school asks:
    # each SMS costs the school money, and parents should hear from it only as it chooses.
    reminder_days_before = models.CharField(
        max_length=64, blank=True, default="", validators=[validate_reminder_days],
        help_text="Remind parents this many days before the due date, comma-separated (e.g. 7,1). Blank: no reminder.",
    )  # fmt: skip
    reminder_days_after = models.CharField(
        max_length=64, blank=True, default="", validators=[validate_reminder_days],
        help_text="Remind parents of an unpaid request this many days after the due date (e.g. 1,7). Blank: no reminder.",
    )  # fmt: skip
    # Fees in parts: a parent may pay a request in installments, each at least the minimum (in the
    # school's minor units; blank: any amount). A request can say otherwise.
    installments_allowed = models.BooleanField(
        default=False, help_text="Parents may pay a request in parts (each request can say otherwise)."
    )
    installment_min_minor = models.BigIntegerField(
        null=True, blank=True, help_text="Smallest part, in minor units of the school's currency; blank: any amount."
    )
    # The language of the parent pages until the parent picks another (docs/parents.md).
    language = models.CharField(
        max_length=8, choices=settings.LANGUAGES, default="en", help_text="The parent pages' language until the parent picks another."
    )
    # Risk scoring (payments/risk.py): payments scoring at least this are flagged (blank: the
    # HIGH_RISK_THRESHOLD setting); with the hold on, they wait for staff before the books.
    risk_threshold = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Flag payments scoring at least this (1-100). Blank: the service's default.",
    )  # fmt: skip
    risk_hold_from_books = models.BooleanField(
        default=False, help_text="Keep flagged payments out of QuickBooks until a staff member clears them."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(installment_min_minor__isnull=True) | Q(installment_min_minor__gt=0),
                name="school_installment_min_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class ProviderAccount(models.Model):
    """A school's account with one payment provider, and the secrets to trust its webhooks."""

    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="accounts")
    provider = models.SlugField(max_length=32, help_text="Registry slug, e.g. surepay, stripe.")
    webhook_secret = EncryptedTextField()
    # During a rotation the previous secret keeps verifying until it expires.
    previous_webhook_secret = EncryptedTextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    api_key = EncryptedTextField(blank=True, default="", help_text="The provider's secret API key.")
    credentials = EncryptedJSONField(
        blank=True, default=dict, help_text="Other provider credentials (e.g. M-Pesa passkey)."
    )
    test_mode = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    ip_allowlist = models.TextField(
        blank=True, default="", help_text="Optional: addresses or CIDR ranges, one per line."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["school", "provider"], name="uniq_account_per_school_provider")
        ]
        ordering = ["school__code", "provider"]
        # The table keeps the model's first name, so renaming the model moved no data.
        db_table = "payments_aggregatoraccount"

    def __str__(self) -> str:
        # Never include a secret here: this string ends up in logs and admin pages.
        return f"{self.provider} @ {self.school.code}"

    def __repr__(self) -> str:
        return f"<ProviderAccount {self.pk} {self.provider}>"

    def webhook_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets a webhook may be signed with now: current first, then a previous one
        that is still inside its rotation grace period."""
        now = now or timezone.now()
        secrets = [self.webhook_secret] if self.webhook_secret else []
        if (
            self.previous_webhook_secret
            and self.previous_secret_expires_at
            and self.previous_secret_expires_at > now
        ):
            secrets.append(self.previous_webhook_secret)
        return secrets


class Student(models.Model):
    """A student as known to the School Directory (a local copy, filled by look-ups)."""

    school = models.ForeignKey(School, on_delete=models.PROTECT, related_name="students")
    student_number = models.CharField(max_length=64, help_text="The school's own student id.")
    full_name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["school", "student_number"], name="uniq_student_number")
        ]
        ordering = ["school__code", "student_number"]

    def __str__(self) -> str:
        return f"{self.student_number} {self.full_name}".strip()


class ProviderStudentLink(models.Model):
    """The cache of known mappings: a provider's student id -> the school's student."""

    class Source(models.TextChoices):
        DIRECTORY = "directory", "School Directory"
        STAFF = "staff", "Mapped by staff"
        # A paybill payment's account number that is a student number of the school.
        ACCOUNT_NUMBER = "account_number", "Paybill account number"

    school = models.ForeignKey(School, on_delete=models.PROTECT)
    provider = models.SlugField(max_length=32)
    provider_student_id = models.CharField(max_length=128)
    student = models.ForeignKey(Student, on_delete=models.CASCADE, related_name="provider_links")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.DIRECTORY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["school", "provider", "provider_student_id"], name="uniq_provider_student_link"
            )
        ]


class MappingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    MAPPED = "mapped", "Mapped"
    UNMATCHED = "unmatched", "Unmatched (student unknown)"
    FAILED = "failed", "Failed (directory unavailable)"
    NOT_APPLICABLE = "not_applicable", "No student id given"


class StaffMembership(models.Model):
    """A staff user belongs to a school: the one rule that scopes what staff see and touch
    (the REST API now, Django admin later). A user may belong to several schools; a superuser
    sees every school without a membership."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="school_memberships")
    school = models.ForeignKey(School, on_delete=models.CASCADE, related_name="staff_memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "school"], name="uniq_staff_membership")]
        ordering = ["school__code", "user_id"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.school.code}"
