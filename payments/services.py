"""Writes of the payments domain. Each business rule lives here once.

Service functions are keyword-only and named ``<thing>_<verb>``. Functions documented as
"inside the caller's transaction" expect the payment row to be locked already.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from config.celery import enqueue_on_commit
from payments import receipts, selectors
from payments.ip_allowlist import IpAllowlistInvalid, ip_allowlist_parse
from payments.models import (
    MANUAL_METHODS,
    MANUAL_PROVIDER,
    AggregatorAccount,
    AuditLog,
    MappingStatus,
    Payment,
    PaymentMethod,
    PaymentRequest,
    ProviderStudentLink,
    ReviewFlag,
    School,
    Student,
)
from payments.money import MAX_MINOR_AMOUNT, MoneyError, currency_code, format_minor, parse_major_amount
from payments.phone import PhoneInvalid, normalize_mpesa_phone
from payments.state import SETTLED_STATES, PaymentStatus, can_transition
from providers.base import CheckoutResult, NormalizedEvent, NormalizedStatus, ReturnUrls
from providers.errors import OperationNotSupported, ProviderError, ProviderRejected, ProviderUnavailable, UnknownProvider
from providers.registry import get_provider, provider_slugs

logger = logging.getLogger(__name__)

S = PaymentStatus


# --- Audit log --------------------------------------------------------------------------------


def audit_entry(
    *,
    action: str,
    actor_type: str,
    actor: str = "",
    school_id: int | None = None,
    target: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """An unsaved audit entry, for callers that write several rows in one insert."""
    return AuditLog(
        action=action,
        actor_type=actor_type,
        actor=actor[:150],
        school_id=school_id,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        details=details or {},
    )


def audit_record(**kwargs) -> AuditLog:
    entry = audit_entry(**kwargs)
    entry.save()
    return entry


# --- Provider events --------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentChange:
    payment: Payment | None
    created: bool
    applied: bool
    from_status: str | None
    to_status: str | None
    note: str


def payment_apply_event(
    *,
    payment: Payment | None,
    new_payment_id: uuid.UUID,
    account: AggregatorAccount,
    event: NormalizedEvent,
    audit_action: str = "payment.webhook",
) -> PaymentChange:
    """Apply a verified provider event to its payment, inside the caller's transaction.

    ``payment`` is the locked existing payment, or None to create one with ``new_payment_id``.
    Writes the payment (one insert or update) and one audit entry that says what changed, or
    why nothing did.
    """
    if event.status is None:
        return PaymentChange(None, False, False, None, None, f"{event.event_type} concerns no payment")

    created = payment is None
    if payment is None:
        payment = Payment(
            id=new_payment_id,
            school_id=account.school_id,
            account=account,
            provider=account.provider,
            external_txn_id=event.external_txn_id or None,
            amount_minor=event.amount_minor,
            currency=event.currency,
            status=S.PENDING,
            provider_student_id=event.provider_student_id,
            mapping_status=MappingStatus.PENDING if event.provider_student_id else MappingStatus.NOT_APPLICABLE,
            payer=dict(event.payer),
        )
    from_status = None if created else payment.status
    changed: set[str] = set()

    # A payment we started is found by our reference before the provider's id is known.
    if not payment.external_txn_id and event.external_txn_id:
        payment.external_txn_id = event.external_txn_id
        changed.add("external_txn_id")
    if not payment.provider_student_id and event.provider_student_id:
        payment.provider_student_id = event.provider_student_id
        payment.mapping_status = MappingStatus.PENDING
        changed |= {"provider_student_id", "mapping_status"}

    target = event.status
    if event.requires_confirmation and target != S.PENDING:
        # An unsigned claim moves nothing until the provider's API confirms it.
        target = S.PROCESSING
    if target in (S.REFUNDED, S.PARTIALLY_REFUNDED):
        if created:
            # A refund proves the payment succeeded, even if its success never reached us.
            _set_status(payment, S.SUCCEEDED, changed)
        note = _apply_refund(payment, event, changed)
    elif target == payment.status:
        note = "created" if created else "no change"
    elif can_transition(payment.status, target):
        if target == S.SUCCEEDED:
            note = _take_confirmed_amount(payment, event.amount_minor, event.currency, changed)
        else:
            note = ""
        _set_status(payment, target, changed)
        note = note or f"{from_status or 'new'} -> {target}"
    else:
        note = f"ignored: {target} after {payment.status}"

    if created:
        payment.save(force_insert=True)
    elif changed:
        payment.save(update_fields=sorted(changed | {"updated_at"}))
    applied = (created or bool(changed)) and not note.startswith("ignored")
    audit_record(
        action=audit_action,
        actor_type=AuditLog.ActorType.PROVIDER,
        actor=account.provider,
        school_id=account.school_id,
        target=payment,
        details={
            "event_id": event.event_id,
            "event_type": event.event_type,
            "from": from_status,
            "to": payment.status,
            "applied": applied,
            "note": note,
            "amount_minor": event.amount_minor,
            "currency": event.currency,
        },
    )
    if applied and payment.status == S.SUCCEEDED and from_status != S.SUCCEEDED and payment.payment_request_id:
        # A payment started from a pay link: settle its request in this same transaction.
        outcome = payment_finalize(payment=payment, actor_type=AuditLog.ActorType.PROVIDER, actor=account.provider)
        note = f"{note}; {outcome.summary}"
    return PaymentChange(payment, created, applied, from_status, payment.status, note)


def payment_apply_provider_status(*, payment_id: uuid.UUID, status: NormalizedStatus, source: str) -> PaymentChange:
    """Apply what the provider's API says about a payment now: the confirmation of an event
    whose body alone is not trusted, or a re-check of a payment whose webhook never came.

    The same state machine and amount rules as a webhook, under a row lock; audited as
    ``payment.confirmed``. Call it outside the provider request (no lock across a network call).
    """
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).select_related("account").get(
            pk=payment_id
        )
        as_event = NormalizedEvent(
            event_id=source,
            event_type=f"status.{status.status}",
            status=status.status,
            external_txn_id=status.external_txn_id,
            amount_minor=payment.amount_minor if status.amount_minor is None else status.amount_minor,
            currency=status.currency or payment.currency,
            refunded_total_minor=status.refunded_total_minor,
        )
        return payment_apply_event(
            payment=payment,
            new_payment_id=payment.pk,
            account=payment.account,
            event=as_event,
            audit_action="payment.confirmed",
        )


def _set_status(payment: Payment, status: str, changed: set[str]) -> None:
    """Every status change goes through here (the rules of which ones are allowed are in
    payments/state.py and the callers)."""
    payment.status = status
    payment.status_changed_at = timezone.now()
    changed |= {"status", "status_changed_at"}
    if status in SETTLED_STATES:
        payment_offer_to_books_on_commit(payment_id=payment.pk)


def payment_offer_to_books_on_commit(*, payment_id: uuid.UUID) -> None:
    """Offer a payment to QuickBooks once the current change commits: it may just have become
    ready (settled and mapped to a student). Idempotent and cheap; the QuickBooks app decides.
    An error there must not undo the committed change: it is logged, and the QuickBooks backlog
    scan finds the payment later."""
    from quickbooks_sync.services import qbo_sync_request  # the books app builds on this one

    transaction.on_commit(lambda: qbo_sync_request(payment_id=payment_id), robust=True)


def _take_confirmed_amount(payment: Payment, amount_minor: int, currency: str, changed: set[str]) -> str:
    """On success the payment records what the provider says was paid."""
    if (payment.amount_minor, payment.currency) == (amount_minor, currency):
        return ""
    note = f"amount {payment.currency} {payment.amount_minor} -> {currency} {amount_minor} (as confirmed)"
    payment.amount_minor, payment.currency = amount_minor, currency
    changed |= {"amount_minor", "currency"}
    return note


def _apply_refund(payment: Payment, event: NormalizedEvent, changed: set[str]) -> str:
    if payment.status not in SETTLED_STATES:
        return f"ignored: refund while {payment.status}"
    if event.currency and event.currency != payment.currency:
        return f"ignored: refund in {event.currency} for a {payment.currency} payment"
    if event.refunded_total_minor is not None:
        total = event.refunded_total_minor
    else:
        total = payment.refunded_amount_minor + (event.refund_amount_minor or 0)
    if total <= payment.refunded_amount_minor:
        return "no change: refund already recorded"
    if total > payment.amount_minor:
        return f"ignored: refunds of {total} exceed the payment's {payment.amount_minor}"
    payment.refunded_amount_minor = total
    changed.add("refunded_amount_minor")
    target = S.REFUNDED if total == payment.amount_minor else S.PARTIALLY_REFUNDED
    if target != payment.status:
        _set_status(payment, target, changed)
    return f"refunded {total} of {payment.amount_minor}"


# --- Student mapping ----------------------------------------------------------------------------


def payment_student_map(*, payment_id: uuid.UUID, directory=None) -> str:
    """Map the payment's provider student id to the school's student.

    Known mappings come from ``ProviderStudentLink``; otherwise the School Directory is asked
    (no lock is held during that call). An unknown student leaves the payment ``unmatched`` for
    staff; it is never dropped. Raises ``DirectoryUnavailable`` for the caller to retry.
    Returns the payment's mapping status.
    """
    payment = Payment.objects.select_related("school").get(pk=payment_id)
    if payment.student_id is not None or not payment.provider_student_id:
        return payment.mapping_status

    link = (
        ProviderStudentLink.objects.select_related("student")
        .filter(
            school_id=payment.school_id,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
        )
        .first()
    )
    if link is not None:
        student, source = link.student, "cache"
    else:
        if directory is None:
            from directory_client.client import default_directory_client

            directory = default_directory_client()
        record = directory.lookup_student(
            school_code=payment.school.code,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
        )
        if record is None:
            _payment_mapping_set(
                payment,
                status=MappingStatus.UNMATCHED,
                error="The School Directory does not know this student id.",
                action="payment.unmatched",
            )
            return MappingStatus.UNMATCHED
        student = student_upsert(school=payment.school, student_number=record.student_id, full_name=record.full_name)
        ProviderStudentLink.objects.get_or_create(
            school_id=payment.school_id,
            provider=payment.provider,
            provider_student_id=payment.provider_student_id,
            defaults={"student": student, "source": ProviderStudentLink.Source.DIRECTORY},
        )
        source = "directory"

    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            student=student, mapping_status=MappingStatus.MAPPED, mapping_error="", updated_at=timezone.now()
        )
        if updated:
            payment_offer_to_books_on_commit(payment_id=payment.pk)
            audit_record(
                action="payment.mapped",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"student_number": student.student_number, "source": source},
            )
    return MappingStatus.MAPPED


class MappingRefused(Exception):
    """Staff asked to map a payment that cannot be mapped by hand; the message says why."""


def payment_student_assign(*, payment_id: uuid.UUID, student_number: str, full_name: str = "", actor) -> Student:
    """Staff map a payment to a student by hand (the directory did not know the student, was
    down, or no student id came with the payment).

    The student is the school's student with that number, created from ``full_name`` when it
    is new to us. Only a payment without a student can be mapped: re-pointing a mapped payment
    would leave QuickBooks with the old customer. The provider's student id is remembered
    (``ProviderStudentLink``, source staff), so the next payment with it maps by itself, and
    the payment is offered to QuickBooks when this commits."""
    student_number = student_number.strip()
    if not student_number:
        raise MappingRefused("Enter the school's student id.")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True).select_related("school").get(pk=payment_id)
        if payment.student_id is not None:
            raise MappingRefused(f"This payment is already mapped to student {payment.student}.")
        student = Student.objects.filter(school_id=payment.school_id, student_number=student_number).first()
        if student is None:
            if not full_name.strip():
                raise MappingRefused(
                    f"No student {student_number} is known at this school yet: enter their full name to add them."
                )
            student = student_upsert(school=payment.school, student_number=student_number, full_name=full_name.strip())
        if payment.provider_student_id:
            ProviderStudentLink.objects.update_or_create(
                school_id=payment.school_id,
                provider=payment.provider,
                provider_student_id=payment.provider_student_id,
                defaults={"student": student, "source": ProviderStudentLink.Source.STAFF},
            )
        previous = payment.mapping_status
        payment.student = student
        payment.mapping_status = MappingStatus.MAPPED
        payment.mapping_error = ""
        payment.save(update_fields=["student", "mapping_status", "mapping_error", "updated_at"])
        payment_offer_to_books_on_commit(payment_id=payment.pk)
        audit_record(
            action="payment.mapped",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor.get_username(),
            school_id=payment.school_id,
            target=payment,
            details={"student_number": student.student_number, "source": "staff", "previous": previous},
        )
    return student


def payment_mapping_fail(*, payment_id: uuid.UUID, error: str) -> None:
    """The directory stayed unavailable through every retry: make it visible to staff."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.student_id is None:
        _payment_mapping_set(payment, status=MappingStatus.FAILED, error=error, action="payment.mapping_failed")


def _payment_mapping_set(payment: Payment, *, status: str, error: str, action: str) -> None:
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment.pk, student__isnull=True).update(
            mapping_status=status, mapping_error=error, updated_at=timezone.now()
        )
        if updated:
            audit_record(
                action=action,
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"provider_student_id": payment.provider_student_id, "error": error},
            )


def student_upsert(*, school: School, student_number: str, full_name: str) -> Student:
    student, created = Student.objects.get_or_create(
        school=school, student_number=student_number, defaults={"full_name": full_name}
    )
    if not created and full_name and student.full_name != full_name:
        student.full_name = full_name
        student.save(update_fields=["full_name", "updated_at"])
    return student


# --- Onboarding -----------------------------------------------------------------------------------


class OnboardingError(Exception):
    """Bad input to an onboarding command; the message is one line for the operator."""


_SCHOOL_CODE_RE = r"^[a-z0-9][a-z0-9-]{0,31}$"


def school_create(*, code: str, name: str, currency: str) -> School:
    code = code.strip().lower()
    if not re.fullmatch(_SCHOOL_CODE_RE, code):
        raise OnboardingError(f"invalid school code {code!r}: use 1-32 lower-case letters, digits or '-'")
    if not name.strip():
        raise OnboardingError("school name must not be empty")
    try:
        currency = currency_code(currency)
    except MoneyError as exc:
        raise OnboardingError(f"unknown currency {currency!r} (expected an ISO 4217 code such as UGX)") from exc
    with transaction.atomic():
        if School.objects.filter(code=code).exists():
            raise OnboardingError(f"school {code!r} already exists")
        try:
            school = School.objects.create(code=code, name=name.strip(), currency=currency)
        except IntegrityError as exc:  # a concurrent create won
            raise OnboardingError(f"school {code!r} already exists") from exc
        audit_record(
            action="school.created",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="cli",
            school_id=school.pk,
            target=school,
            details={"code": code, "currency": currency},
        )
    return school


def generate_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def account_create(
    *,
    school_code: str,
    provider: str,
    webhook_secret: str | None = None,
    api_key: str = "",
    credentials: dict | None = None,
    test_mode: bool = False,
    ip_allowlist: str = "",
    actor: str = "cli",
) -> tuple[AggregatorAccount, str]:
    """Connect a school to a provider. Returns the account and its webhook secret (generated
    when none is given, for the caller to show once)."""
    _ip_allowlist_check(ip_allowlist)
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise OnboardingError(f"unknown provider {provider!r} (known: {', '.join(provider_slugs())})") from exc
    school = School.objects.filter(code=school_code.strip().lower()).first()
    if school is None:
        raise OnboardingError(f"unknown school {school_code!r}")
    if adapter.signs_with_api_key:
        # The provider signs webhooks with the secret API key itself (Paystack): one value.
        if webhook_secret and api_key and webhook_secret != api_key:
            raise OnboardingError(f"{adapter.slug} signs webhooks with its secret API key: give it once, as --api-key")
        webhook_secret = webhook_secret or api_key or None
        if not webhook_secret:
            raise OnboardingError(f"{adapter.slug} signs webhooks with its secret API key: pass --api-key")
        api_key = webhook_secret
    if webhook_secret is not None and len(webhook_secret) < 6:
        raise OnboardingError("webhook secret is too short (at least 6 characters)")
    secret = webhook_secret or generate_webhook_secret()
    with transaction.atomic():
        if AggregatorAccount.objects.filter(school=school, provider=adapter.slug).exists():
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account")
        try:
            account = AggregatorAccount.objects.create(
                school=school,
                provider=adapter.slug,
                webhook_secret=secret,
                api_key=api_key,
                credentials=credentials or {},
                test_mode=test_mode,
                ip_allowlist=ip_allowlist,
            )
        except IntegrityError as exc:
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account") from exc
        audit_record(
            action="account.created",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=school.pk,
            target=account,
            details={"provider": adapter.slug, "test_mode": test_mode, "ip_allowlist": ip_allowlist},
        )
    return account, secret


def account_update(
    *,
    account_id: int,
    test_mode: bool | None = None,
    active: bool | None = None,
    ip_allowlist: str | None = None,
    actor: str = "cli",
) -> tuple[AggregatorAccount, list[str]]:
    """Change an account's switches; None leaves a field as it is. Secrets change only through
    ``account_rotate_secret``. Audited as ``account.updated`` with the changed fields' names and
    new values (none of them is a secret); a save that changes nothing writes nothing. Returns
    the account and the names of the changed fields."""
    if ip_allowlist is not None:
        _ip_allowlist_check(ip_allowlist)
    wanted = {"test_mode": test_mode, "active": active, "ip_allowlist": ip_allowlist}
    with transaction.atomic():
        account = AggregatorAccount.objects.select_for_update().select_related("school").get(pk=account_id)
        changes = {
            name: value for name, value in wanted.items() if value is not None and getattr(account, name) != value
        }
        if not changes:
            return account, []
        for name, value in changes.items():
            setattr(account, name, value)
        # Saving clears the webhook path's account cache (PaymentsConfig.ready).
        account.save(update_fields=[*changes, "updated_at"])
        audit_record(
            action="account.updated",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=account.school_id,
            target=account,
            details={"provider": account.provider, "changed": sorted(changes), **changes},
        )
    return account, sorted(changes)


def _ip_allowlist_check(text: str) -> None:
    try:
        ip_allowlist_parse(text)
    except IpAllowlistInvalid as exc:
        raise OnboardingError(f"IP allowlist: {exc}") from exc


# --- Webhook secret rotation ----------------------------------------------------------------------


def account_rotate_secret(
    *,
    school_code: str,
    provider: str,
    new_secret: str | None = None,
    grace_hours: float = 24,
    expected_updated_at: datetime | None = None,
    actor: str = "cli",
) -> tuple[AggregatorAccount, str]:
    """Give an account a new webhook secret; the current one keeps verifying for ``grace_hours``.

    The rule: the new secret signs from now on; the old one moves to ``previous_webhook_secret``
    until ``previous_secret_expires_at`` (``webhook_secrets()`` offers both meanwhile), so
    deliveries the provider signed before its side was switched are still accepted. A grace of 0
    ends the old secret at once. Rotating again during a grace period replaces the older secret.
    A secret is generated when none is given, except for providers that sign with their secret
    API key (Paystack): the new key comes from the provider's dashboard and becomes the API key
    too. Audited as ``secret.rotated`` (never with a secret). Returns the account and the new
    secret, for the caller to show once.

    ``expected_updated_at``: rotate only if the account is unchanged since the caller read it, so
    a form submitted twice (a browser's reload) cannot rotate twice and lose the secret shown.
    """
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise OnboardingError(f"unknown provider {provider!r} (known: {', '.join(provider_slugs())})") from exc
    if grace_hours < 0 or grace_hours > 24 * 30:
        raise OnboardingError("grace period must be between 0 and 720 hours")
    if adapter.signs_with_api_key and not new_secret:
        raise OnboardingError(
            f"{adapter.slug} signs webhooks with its secret API key: roll the key in its dashboard and pass it with --secret"
        )
    if new_secret is not None and len(new_secret) < 6:
        raise OnboardingError("webhook secret is too short (at least 6 characters)")
    secret = new_secret or generate_webhook_secret()
    with transaction.atomic():
        account = (
            AggregatorAccount.objects.select_for_update()
            .select_related("school")
            .filter(school__code=school_code.strip().lower(), provider=adapter.slug)
            .first()
        )
        if account is None:
            raise OnboardingError(f"school {school_code!r} has no {adapter.slug} account")
        if expected_updated_at is not None and account.updated_at != expected_updated_at:
            raise OnboardingError(
                "the account changed since this form was opened (was the secret just rotated?): nothing was rotated"
            )
        if secret == account.webhook_secret:
            raise OnboardingError("the new secret is the current one")
        now = timezone.now()
        account.previous_webhook_secret = account.webhook_secret if grace_hours else ""
        account.previous_secret_expires_at = now + timedelta(hours=grace_hours) if grace_hours else None
        account.webhook_secret = secret
        fields = ["webhook_secret", "previous_webhook_secret", "previous_secret_expires_at", "updated_at"]
        if adapter.signs_with_api_key:
            account.api_key = secret
            fields.append("api_key")
        account.save(update_fields=fields)
        audit_record(
            action="secret.rotated",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=account.school_id,
            target=account,
            details={
                "provider": adapter.slug,
                "grace_hours": grace_hours,
                "previous_valid_until": account.previous_secret_expires_at.isoformat()
                if account.previous_secret_expires_at
                else None,
                "api_key_rotated": adapter.signs_with_api_key,
            },
        )
    return account, secret


# --- Payment requests (issue 4) ---------------------------------------------------------------


class PaymentRequestInvalid(Exception):
    """Input that cannot become a payment request. ``errors`` maps a field to a message that is
    safe to show to staff."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class PaymentRequestStateError(Exception):
    """The request is not in a state that allows this (e.g. cancelling a paid request)."""


@dataclass(frozen=True)
class PaymentRequestDraft:
    """A checked, not yet saved payment request."""

    student: Student
    description: str
    amount_minor: int
    currency: str
    due_date: date | None


def payment_request_draft(
    *,
    school: School,
    student_number: str,
    description: str,
    amount: str | int | None = None,
    amount_minor: int | None = None,
    currency: str | None = "",
    due_date: date | str | None = None,
    students: Mapping[str, Student] | None = None,
) -> PaymentRequestDraft:
    """Check what staff typed (admin, API or one CSV row) and return a draft, or raise
    ``PaymentRequestInvalid`` with every problem at once.

    ``amount`` is in major units and parsed strictly for the currency (``"450,000"`` UGX,
    ``"1,500.50"`` KES: more decimals than the currency has is an error, never a rounding);
    ``amount_minor`` is an integer count of minor units. Exactly one of them. The student is the
    school's student number and must be known (Django admin: Students). ``students`` is an
    optional look-up table for bulk imports.
    """
    errors: dict[str, str] = {}
    number = (student_number or "").strip()
    student = None
    if not number:
        errors["student_id"] = "This field is required."
    elif students is not None:
        student = students.get(number)
    else:
        student = Student.objects.filter(school=school, student_number=number).first()
    if number and student is None:
        errors["student_id"] = f"Unknown student {number!r} at {school.code}."

    text = (description or "").strip()
    if not text:
        errors["description"] = "This field is required."
    elif len(text) > 200:
        errors["description"] = "At most 200 characters."

    code = None
    try:
        code = currency_code((currency or "").strip() or school.currency)
    except MoneyError as exc:
        errors["currency"] = str(exc)

    minor = None
    given = [value for value in (amount, amount_minor) if value not in (None, "")]
    if len(given) != 1:
        errors["amount"] = "Give the amount (major units) or amount_minor, not both." if given else "This field is required."
    elif amount_minor not in (None, ""):
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            errors["amount_minor"] = "Must be a whole number of minor units."
        elif amount_minor > MAX_MINOR_AMOUNT:
            # The same refusal as for an amount typed in major units (payments.money).
            errors["amount_minor"] = f"amount_minor {amount_minor} is implausibly large"
        else:
            minor = amount_minor
    elif code is not None:
        try:
            minor = parse_major_amount(amount.strip() if isinstance(amount, str) else amount, code)
        except MoneyError as exc:
            errors["amount"] = str(exc)
    if minor is not None and minor <= 0:
        errors["amount_minor" if amount_minor not in (None, "") else "amount"] = "Must be greater than zero."
        minor = None

    due = None
    if isinstance(due_date, datetime):
        errors["due_date"] = "Give a date (YYYY-MM-DD), not a time."
    elif isinstance(due_date, date):
        due = due_date
    elif isinstance(due_date, str) and due_date.strip():
        try:
            due = date.fromisoformat(due_date.strip())
        except ValueError:
            errors["due_date"] = f"{due_date.strip()!r} is not a date (YYYY-MM-DD)."

    if errors:
        raise PaymentRequestInvalid(errors)
    return PaymentRequestDraft(student=student, description=text, amount_minor=minor, currency=code, due_date=due)


def payment_request_create(*, school: School, draft: PaymentRequestDraft, actor=None) -> PaymentRequest:
    """Save one payment request and its audit entry; it gets its pay-link token here."""
    return payment_requests_create_many(school=school, drafts=[draft], actor=actor)[0]


def payment_requests_create_many(
    *, school: School, drafts: list[PaymentRequestDraft], actor=None, source: str = "staff"
) -> list[PaymentRequest]:
    """Save checked drafts all together or not at all (one transaction)."""
    if any(draft.student.school_id != school.pk for draft in drafts):
        raise PaymentRequestInvalid({"student_id": "The student belongs to another school."})
    actor_name = getattr(actor, "username", "") or "system"
    with transaction.atomic():
        requests = [
            PaymentRequest(
                school=school,
                student=draft.student,
                description=draft.description,
                amount_minor=draft.amount_minor,
                currency=draft.currency,
                due_date=draft.due_date,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
            for draft in drafts
        ]
        # Saved one by one: bulk_create does not return ids on every database, and imports are
        # a few thousand rows at most.
        for payment_request in requests:
            payment_request.save()
        AuditLog.objects.bulk_create(
            audit_entry(
                action="payment_request.created",
                actor_type=AuditLog.ActorType.STAFF if actor is not None else AuditLog.ActorType.SYSTEM,
                actor=actor_name,
                school_id=school.pk,
                target=payment_request,
                details={
                    "student_number": payment_request.student.student_number,
                    "amount_minor": payment_request.amount_minor,
                    "currency": payment_request.currency,
                    "source": source,
                },
            )
            for payment_request in requests
        )
    return requests


def payment_request_cancel(*, payment_request_id: int, actor) -> PaymentRequest:
    """Staff withdraw an open request. Money that still arrives for it is kept and flagged."""
    with transaction.atomic():
        payment_request = PaymentRequest.objects.select_for_update(no_key=True).get(pk=payment_request_id)
        if payment_request.status == PaymentRequest.Status.CANCELLED:
            return payment_request
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise PaymentRequestStateError(f"A {payment_request.status} request cannot be cancelled.")
        payment_request.status = PaymentRequest.Status.CANCELLED
        payment_request.cancelled_at = timezone.now()
        payment_request.save(update_fields=["status", "cancelled_at", "updated_at"])
        audit_record(
            action="payment_request.cancelled",
            actor_type=AuditLog.ActorType.STAFF,
            actor=getattr(actor, "username", "") or "",
            school_id=payment_request.school_id,
            target=payment_request,
        )
    return payment_request


# CSV import: one row per request. ``student_id`` is the school's student number; ``amount`` is
# in major units; ``currency`` may be blank (the school's); ``due_date`` is YYYY-MM-DD or blank.
CSV_COLUMNS = ("student_id", "description", "amount", "currency", "due_date")
CSV_REQUIRED_COLUMNS = ("student_id", "description", "amount")
CSV_MAX_ROWS = 5000
CSV_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class CsvRowError:
    line: int  # the line number in the file, header = 1
    field: str
    message: str


@dataclass
class CsvImportResult:
    created: list[PaymentRequest] = field(default_factory=list)
    errors: list[CsvRowError] = field(default_factory=list)
    rows: int = 0


def payment_requests_import_csv(*, school: School, data: bytes, actor=None) -> CsvImportResult:
    """Check every row first; create all requests in one transaction only when no row has an
    error. Nothing is half-imported: any error means nothing is saved, and every error is
    reported with its line and column."""
    result = CsvImportResult()
    if len(data) > CSV_MAX_BYTES:
        result.errors.append(CsvRowError(0, "(file)", f"The file is larger than {CSV_MAX_BYTES // 1024} KB."))
        return result
    try:
        text = data.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError:
        result.errors.append(CsvRowError(0, "(file)", "The file is not UTF-8 text. Save it as CSV UTF-8."))
        return result
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in header]
    if missing:
        result.errors.append(
            CsvRowError(1, "(header)", f"Missing column(s): {', '.join(missing)}. Expected: {', '.join(CSV_COLUMNS)}.")
        )
        return result
    reader.fieldnames = header
    students = {student.student_number: student for student in Student.objects.filter(school=school)}
    drafts: list[PaymentRequestDraft] = []
    try:
        for row in reader:
            line = reader.line_num
            if not any((value or "").strip() for key, value in row.items() if key is not None):
                continue  # a blank line
            result.rows += 1
            if result.rows > CSV_MAX_ROWS:
                result.errors.append(CsvRowError(line, "(file)", f"More than {CSV_MAX_ROWS} rows; split the file."))
                break
            if row.get(None):
                result.errors.append(CsvRowError(line, "(row)", "More values than columns."))
                continue
            try:
                drafts.append(
                    payment_request_draft(
                        school=school,
                        student_number=row.get("student_id") or "",
                        description=row.get("description") or "",
                        amount=row.get("amount") or "",
                        currency=row.get("currency") or "",
                        due_date=row.get("due_date") or "",
                        students=students,
                    )
                )
            except PaymentRequestInvalid as exc:
                result.errors.extend(CsvRowError(line, name, message) for name, message in exc.errors.items())
    except csv.Error as exc:
        result.errors.append(CsvRowError(reader.line_num, "(file)", f"Not a readable CSV file: {exc}"))
    if not result.errors and not drafts:
        result.errors.append(CsvRowError(0, "(file)", "The file has no rows."))
    if result.errors:
        return result
    result.created = payment_requests_create_many(school=school, drafts=drafts, actor=actor, source="csv")
    return result


# --- Finalizing: a success settles its request ----------------------------------------------------


@dataclass(frozen=True)
class FinalizeOutcome:
    result: Literal["paid", "amount_mismatch", "overpayment", "already_finalized"]
    reason: str

    @property
    def summary(self) -> str:
        return "request paid" if self.result == "paid" else f"request not settled: {self.result}"


def payment_finalize(*, payment: Payment, actor_type: str, actor: str = "") -> FinalizeOutcome:
    """Settle the payment request of a payment that has just succeeded.

    Runs inside the caller's transaction with the payment row locked (every path that makes a
    payment succeed comes here: webhooks, API confirmations, the janitor, staff confirming a
    manual payment). Locks the request row, then:

    - amount and currency exactly as requested, request open: the request is paid by this
      payment, in this transaction;
    - a different amount or currency: the request stays open, the payment is flagged
      ``amount_mismatch`` for staff;
    - the request is already paid by another payment (or cancelled): the money is kept, the
      payment is flagged ``overpayment`` for staff.

    Every outcome writes ``payment.finalize`` with the reason.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payment_finalize runs inside the caller's transaction, payment row locked")
    # Lock order everywhere: payment, then its request.
    payment_request = PaymentRequest.objects.select_for_update(no_key=True).get(pk=payment.payment_request_id)
    paid = format_minor(payment.amount_minor, payment.currency)
    due = format_minor(payment_request.amount_minor, payment_request.currency)
    flag = ""
    if payment_request.status == PaymentRequest.Status.PAID and payment_request.paid_payment_id == payment.pk:
        return FinalizeOutcome("already_finalized", "this payment already settled the request")
    if payment_request.status == PaymentRequest.Status.PAID:
        outcome = FinalizeOutcome(
            "overpayment", f"{paid} received, but the request was already paid by payment {payment_request.paid_payment_id}"
        )
        flag = ReviewFlag.OVERPAYMENT
    elif payment_request.status == PaymentRequest.Status.CANCELLED:
        outcome = FinalizeOutcome("overpayment", f"{paid} received for a cancelled request")
        flag = ReviewFlag.OVERPAYMENT
    elif (payment.amount_minor, payment.currency) != (payment_request.amount_minor, payment_request.currency):
        outcome = FinalizeOutcome("amount_mismatch", f"{paid} received, {due} requested")
        flag = ReviewFlag.AMOUNT_MISMATCH
    else:
        outcome = FinalizeOutcome("paid", f"{paid} received as requested")
        payment_request.status = PaymentRequest.Status.PAID
        payment_request.paid_payment = payment
        payment_request.paid_at = timezone.now()
        payment_request.save(update_fields=["status", "paid_payment", "paid_at", "updated_at"])
        audit_record(
            action="payment_request.paid",
            actor_type=actor_type,
            actor=actor,
            school_id=payment_request.school_id,
            target=payment_request,
            details={"payment_id": str(payment.pk)},
        )
    if flag:
        payment.review_flag = flag
        payment.review_flag_reason = outcome.reason
        payment.save(update_fields=["review_flag", "review_flag_reason", "updated_at"])
    audit_record(
        action="payment.finalize",
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={
            "result": outcome.result,
            "reason": outcome.reason,
            "payment_request_id": payment_request.pk,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "requested_minor": payment_request.amount_minor,
            "requested_currency": payment_request.currency,
        },
    )
    return outcome


# --- Checkout: "Pay now" ---------------------------------------------------------------------------


class CheckoutRefused(Exception):
    """The checkout was not started. ``code`` says why; ``detail`` is safe to show the payer;
    ``payment`` is the attempt already under way, when that is the reason."""

    def __init__(self, code: str, detail: str, payment: Payment | None = None):
        self.code = code
        self.detail = detail
        self.payment = payment
        super().__init__(detail)


class CheckoutFailed(Exception):
    """The provider could not start the payment. ``detail`` is safe to show the payer."""

    def __init__(self, detail: str, payment: Payment):
        self.detail = detail
        self.payment = payment
        super().__init__(detail)


@dataclass(frozen=True)
class CheckoutStarted:
    payment: Payment
    redirect_url: str  # where to send the payer; empty when a prompt went to their phone
    prompt_sent: bool
    message: str
    reused: bool  # a second click: the checkout already under way, not a new one


# Payments the provider may still settle: a checkout in flight, or given up on by the payer.
IN_FLIGHT_STATES = (S.PENDING, S.PROCESSING)


def checkout_return_urls(*, payment: Payment, payment_request: PaymentRequest) -> ReturnUrls:
    base = settings.PUBLIC_BASE_URL
    return ReturnUrls(
        success_url=base + reverse("payment-thanks", args=[payment.pk]),
        cancel_url=base + reverse("pay", args=[payment_request.token]),
        callback_url=base
        + reverse("webhook-receive-school", kwargs={"provider": payment.provider, "school_code": payment.school.code}),
    )


def _new_reference(prefix: str) -> str:
    # 12 characters: M-Pesa's AccountReference is at most 12. 55 random bits; the unique
    # constraint on Payment.reference settles the (unlikely) collision.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(11))


def payment_checkout_start(
    *,
    payment_request_id: int,
    provider: str,
    payer: Mapping[str, Any] | None = None,
    actor_type: str = AuditLog.ActorType.PARENT,
    actor: str = "",
) -> CheckoutStarted:
    """"Pay now": create the payment intent, ask the provider for a checkout, return where to
    send the payer.

    One request cannot be paid twice by a double click or two tabs. Deciding happens under a
    lock on the request row: an attempt with the same provider already under way is reused
    (its checkout URL, or its prompt), one still being created is waited for (up to
    ``CHECKOUT_WAIT_SECONDS``), and one with another provider refuses the new checkout until
    the payer gives it up (``payment_checkout_abandon``). The provider call happens after that
    lock is released. Raises ``CheckoutRefused`` or ``CheckoutFailed``.
    """
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise CheckoutRefused("provider_unknown", "This way of paying is not available.") from exc
    payer = dict(payer or {})
    if selectors.provider_needs_phone(adapter):
        try:
            payer["phone"] = normalize_mpesa_phone(str(payer.get("phone") or ""))
        except PhoneInvalid as exc:
            raise CheckoutRefused("phone_invalid", str(exc)) from exc

    deadline = time.monotonic() + settings.CHECKOUT_WAIT_SECONDS
    while True:
        decision, payment = _checkout_decide(
            payment_request_id=payment_request_id, adapter=adapter, payer=payer, actor_type=actor_type, actor=actor
        )
        if decision == "reuse":
            return CheckoutStarted(
                payment=payment,
                redirect_url=payment.checkout_url,
                prompt_sent=bool(payment.provider_data.get("prompt_sent")),
                message=payment.provider_data.get("checkout_message", ""),
                reused=True,
            )
        if decision == "create":
            break
        if decision == "supersede":
            _payment_supersede(payment_id=payment.pk, actor_type=actor_type, actor=actor)
            continue
        # "wait": another click is asking the provider right now; reuse its answer.
        if time.monotonic() >= deadline:
            raise CheckoutRefused(
                "checkout_in_progress", "Your payment is being started. Wait a moment, then try again.", payment
            )
        time.sleep(0.2)

    payment_request = payment.payment_request
    try:
        result = adapter.create_checkout(
            payment=payment, return_urls=checkout_return_urls(payment=payment, payment_request=payment_request)
        )
    except ProviderUnavailable as exc:
        # The provider may have started it anyway (a timeout): the payment stays open for the
        # janitor to ask about, but the payer may start another one.
        _payment_checkout_error(payment_id=payment.pk, error=exc.detail, fail=False)
        raise CheckoutFailed(f"{adapter.display_name} is not answering. Please try again in a few minutes.", payment) from exc
    except (ProviderRejected, OperationNotSupported) as exc:
        _payment_checkout_error(payment_id=payment.pk, error=exc.detail, fail=True)
        raise CheckoutFailed(f"{adapter.display_name} could not start this payment.", payment) from exc
    except Exception as exc:
        logger.exception("create_checkout of %s failed for payment %s", adapter.slug, payment.pk)
        _payment_checkout_error(payment_id=payment.pk, error=f"{type(exc).__name__}: {exc}", fail=False)
        raise CheckoutFailed(f"{adapter.display_name} could not start this payment.", payment) from exc
    payment = _payment_checkout_record(payment_id=payment.pk, result=result, actor_type=actor_type, actor=actor)
    return CheckoutStarted(
        payment=payment,
        redirect_url=result.redirect_url,
        prompt_sent=result.prompt_sent,
        message=result.message,
        reused=False,
    )


def _checkout_decide(
    *, payment_request_id: int, adapter, payer: dict, actor_type: str, actor: str
) -> tuple[Literal["reuse", "wait", "supersede", "create"], Payment]:
    """Under the request's row lock: reuse or wait for an attempt under way, refuse a new one
    beside it, name one to supersede, or create the payment intent (audit ``payment.intent``).
    One short transaction, no network.

    Lock order is payment, then request, everywhere (``payment_finalize`` holds a payment's lock
    when it takes its request's); so this, holding the request's lock, locks no payment: the
    request lock alone serializes every checkout of the request, and a superseded attempt is
    cancelled in its own transaction (``_payment_supersede``).
    """
    now = timezone.now()
    with transaction.atomic():
        try:
            payment_request = (
                PaymentRequest.objects.select_for_update(no_key=True, of=("self",))
                .select_related("school", "student")
                .get(pk=payment_request_id)
            )
        except PaymentRequest.DoesNotExist as exc:
            raise CheckoutRefused("request_unknown", "This pay link is not valid.") from exc
        if payment_request.status == PaymentRequest.Status.PAID:
            raise CheckoutRefused("request_paid", "This has already been paid.")
        if payment_request.status != PaymentRequest.Status.OPEN or not payment_request.school.active:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        account = AggregatorAccount.objects.filter(
            school_id=payment_request.school_id, provider=adapter.slug, active=True
        ).first()
        if account is None or not selectors.provider_supports_checkout(adapter):
            raise CheckoutRefused("provider_unavailable", "This way of paying is not available for this school.")

        for attempt in payment_request.payments.filter(
            method=PaymentMethod.PROVIDER, status__in=IN_FLIGHT_STATES
        ).order_by("created_at"):
            if _attempt_superseded(attempt, now):
                return "supersede", attempt
            if attempt.provider != adapter.slug:
                raise CheckoutRefused(
                    "another_checkout_in_progress",
                    f"A payment with {selectors.provider_display_name(attempt.provider)} is already under way.",
                    attempt,
                )
            ready = attempt.checkout_created_at is not None or attempt.checkout_error
            return ("reuse" if ready else "wait"), attempt

        payment = Payment(
            school_id=payment_request.school_id,
            account=account,
            provider=adapter.slug,
            amount_minor=payment_request.amount_minor,
            currency=payment_request.currency,
            status=S.PENDING,
            status_changed_at=now,
            payment_request=payment_request,
            method=PaymentMethod.PROVIDER,
            # The pay link names the student: nothing to look up in the School Directory.
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=payer,
            next_check_at=_recheck_time(now, 0),
        )
        _payment_insert_with_reference(payment, prefix="P")
        audit_record(
            action="payment.intent",
            actor_type=actor_type,
            actor=actor,
            school_id=payment.school_id,
            target=payment,
            details={
                "payment_request_id": payment_request.pk,
                "provider": adapter.slug,
                "reference": payment.reference,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
            },
        )
    payment.payment_request = payment_request
    return "create", payment


def _attempt_superseded(attempt: Payment, now: datetime) -> bool:
    """An attempt the payer never got a checkout for (the provider failed, or the process asking
    it died) does not block a new one. Only while pending: once the provider is processing it,
    money may be moving."""
    if attempt.status != S.PENDING:
        return False
    stale = now - timedelta(seconds=settings.CHECKOUT_STALE_SECONDS)
    return bool(attempt.checkout_error) or (attempt.checkout_created_at is None and attempt.created_at < stale)


def _payment_supersede(*, payment_id: uuid.UUID, actor_type: str, actor: str) -> None:
    """Cancel an attempt superseded by a new checkout (it stays on the janitor's list)."""
    with transaction.atomic():
        attempt = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        if _attempt_superseded(attempt, timezone.now()):
            reason = attempt.checkout_error or "the checkout was never created"
            _payment_abandon_locked(attempt, reason=f"superseded: {reason}", actor_type=actor_type, actor=actor)


def _payment_insert_with_reference(payment: Payment, *, prefix: str) -> None:
    """Insert a new payment with a fresh reference; a (very unlikely) duplicate reference is
    settled by the unique constraint and another draw."""
    for attempt in range(3):
        payment.reference = _new_reference(prefix)
        try:
            with transaction.atomic():
                payment.save(force_insert=True)
            return
        except IntegrityError:
            if attempt == 2 or not Payment.objects.filter(reference=payment.reference).exists():
                raise


def _payment_checkout_record(*, payment_id: uuid.UUID, result: CheckoutResult, actor_type: str, actor: str) -> Payment:
    """Save what the provider answered: its checkout id, transaction id, data, the URL."""
    now = timezone.now()
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).select_related(
            "school", "payment_request"
        ).get(pk=payment_id)
        if result.checkout_id:
            payment.provider_checkout_id = result.checkout_id
        if result.external_txn_id and not payment.external_txn_id:
            payment.external_txn_id = result.external_txn_id
        payment.provider_data = {
            **payment.provider_data,
            **dict(result.provider_data),
            "prompt_sent": result.prompt_sent,
            "checkout_message": result.message,
        }
        payment.checkout_url = result.redirect_url
        payment.checkout_created_at = now
        # The janitor's schedule counts from the moment the payer could start paying.
        payment.next_check_at = _recheck_time(now, 0) if payment.status in RECHECKABLE_STATES else None
        payment.save(
            update_fields=[
                "provider_checkout_id",
                "external_txn_id",
                "provider_data",
                "checkout_url",
                "checkout_created_at",
                "next_check_at",
                "updated_at",
            ]
        )
        audit_record(
            action="payment.checkout",
            actor_type=actor_type,
            actor=actor,
            school_id=payment.school_id,
            target=payment,
            details={
                "provider": payment.provider,
                "checkout_id": result.checkout_id,
                "prompt_sent": result.prompt_sent,
            },
        )
    return payment


def _payment_checkout_error(*, payment_id: uuid.UUID, error: str, fail: bool) -> None:
    """The provider did not give us a checkout. ``fail``: it refused, so nothing can have been
    started and the payment fails; otherwise it may have started anyway, so the payment stays
    open for the janitor (it no longer blocks a new checkout)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        from_status = payment.status
        payment.checkout_error = error[:2000] or "error"
        fields = {"checkout_error", "updated_at"}
        if fail and can_transition(payment.status, S.FAILED):
            _set_status(payment, S.FAILED, fields)
            payment.next_check_at = None
            fields.add("next_check_at")
        payment.save(update_fields=sorted(fields))
        audit_record(
            action="payment.checkout_failed",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=payment.provider,
            school_id=payment.school_id,
            target=payment,
            details={"error": error[:500], "from": from_status, "to": payment.status},
        )


def payment_checkout_abandon(*, payment_id: uuid.UUID, payment_request_id: int, actor_type: str, actor: str = "") -> Payment:
    """The payer gives up a checkout under way to choose another way to pay. Only a payment
    the provider has not started processing; it is cancelled here, and stays on the janitor's
    list: money that still arrives for it is taken (a confirmed success outranks a
    cancellation) and flagged if the request was paid another way meanwhile."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(
            pk=payment_id, payment_request_id=payment_request_id
        )
        if payment.method != PaymentMethod.PROVIDER or payment.status not in IN_FLIGHT_STATES:
            return payment
        if payment.status != S.PENDING:
            raise CheckoutRefused(
                "checkout_processing", "The provider is already processing this payment; wait for its answer.", payment
            )
        _payment_abandon_locked(payment, reason="given up by the payer", actor_type=actor_type, actor=actor)
    return payment


def _payment_abandon_locked(payment: Payment, *, reason: str, actor_type: str, actor: str) -> None:
    from_status = payment.status
    changed: set[str] = {"updated_at"}
    _set_status(payment, S.CANCELLED, changed)
    payment.save(update_fields=sorted(changed))
    audit_record(
        action="payment.abandoned",
        actor_type=actor_type,
        actor=actor,
        school_id=payment.school_id,
        target=payment,
        details={"from": from_status, "to": payment.status, "reason": reason},
    )


# --- Manual payments: reported by a parent, reviewed by staff ------------------------------------


class ManualPaymentInvalid(Exception):
    """``errors`` maps a form field to a message that is safe to show the parent."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class ReviewError(Exception):
    """The review cannot be recorded (already reviewed, not a manual payment, no note)."""


def manual_payment_submit(
    *,
    payment_request_id: int,
    method: str,
    manual_reference: str,
    amount_minor: int,
    receipt: UploadedFile | None = None,
    payer: Mapping[str, Any] | None = None,
) -> Payment:
    """A parent reports a bank transfer, mobile-money or cash payment. It waits as
    ``awaiting_review`` until staff confirm it (``manual_payment_review``); the request stays
    open meanwhile. A receipt, when given, must be a PDF or an image within the size limit."""
    errors: dict[str, str] = {}
    if method not in MANUAL_METHODS:
        errors["method"] = "Choose bank transfer, mobile money or cash."
    reference = (manual_reference or "").strip()
    if method != PaymentMethod.CASH and not reference:
        errors["reference"] = "Enter the reference of your transfer."
    if len(reference) > 128:
        errors["reference"] = "At most 128 characters."
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        errors["amount"] = "Enter the amount you paid."
    kind = None
    if receipt is not None:
        try:
            kind = receipts.receipt_check(receipt)
        except receipts.ReceiptInvalid as exc:
            errors["receipt"] = str(exc)
    if errors:
        raise ManualPaymentInvalid(errors)

    with transaction.atomic():
        payment_request = (
            PaymentRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("school", "student")
            .get(pk=payment_request_id)
        )
        if payment_request.status != PaymentRequest.Status.OPEN:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        waiting = payment_request.payments.filter(status=S.AWAITING_REVIEW).count()
        if waiting >= settings.MANUAL_PAYMENTS_PENDING_MAX:
            raise CheckoutRefused(
                "too_many_reports", "The school has not yet checked the payments you reported. Please wait for them."
            )
        now = timezone.now()
        payment = Payment(
            school=payment_request.school,
            account=None,
            provider=MANUAL_PROVIDER,
            amount_minor=amount_minor,
            currency=payment_request.currency,
            status=S.AWAITING_REVIEW,
            status_changed_at=now,
            payment_request=payment_request,
            method=method,
            manual_reference=reference,
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=dict(payer or {}),
        )
        if receipt is not None and kind is not None:
            payment.receipt_content_type = kind.content_type
            # Written to storage before the row; a rollback can leave an orphan file, never a
            # row without its file.
            payment.receipt.save(f"receipt.{kind.extension}", receipt, save=False)
        _payment_insert_with_reference(payment, prefix="M")
        audit_record(
            action="payment.manual_reported",
            actor_type=AuditLog.ActorType.PARENT,
            school_id=payment.school_id,
            target=payment,
            details={
                "payment_request_id": payment_request.pk,
                "method": method,
                "manual_reference": reference,
                "amount_minor": amount_minor,
                "currency": payment.currency,
                "receipt": kind.content_type if kind else None,
            },
        )
    return payment


def manual_payment_review(
    *, payment_id: uuid.UUID, decision: Literal["confirm", "reject"], note: str, reviewer
) -> Payment:
    """Staff confirm or reject a manual payment, with a note. A confirmation makes the payment
    succeed and settles its request through ``payment_finalize``, as a provider's success does;
    a rejection fails it and leaves the request open."""
    note = (note or "").strip()
    if decision not in ("confirm", "reject"):
        raise ReviewError("Choose confirm or reject.")
    if not note:
        raise ReviewError("Write a note: what you checked, or why you reject it.")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        if not payment.is_manual:
            raise ReviewError("Only manual payments are reviewed here.")
        if payment.status != S.AWAITING_REVIEW:
            raise ReviewError(f"This payment was already reviewed ({payment.get_status_display().lower()}).")
        if not selectors.user_can_access_school(user=reviewer, school_id=payment.school_id):
            raise ReviewError("You are not staff of this payment's school.")
        from_status = payment.status
        changed: set[str] = {"reviewed_by", "reviewed_at", "review_note", "updated_at"}
        _set_status(payment, S.SUCCEEDED if decision == "confirm" else S.FAILED, changed)
        payment.reviewed_by = reviewer
        payment.reviewed_at = timezone.now()
        payment.review_note = note
        payment.save(update_fields=sorted(changed))
        audit_record(
            action="payment.reviewed",
            actor_type=AuditLog.ActorType.STAFF,
            actor=reviewer.get_username(),
            school_id=payment.school_id,
            target=payment,
            details={"decision": decision, "note": note[:1000], "from": from_status, "to": payment.status},
        )
        if decision == "confirm" and payment.payment_request_id:
            payment_finalize(payment=payment, actor_type=AuditLog.ActorType.STAFF, actor=reviewer.get_username())
    return payment


# --- The janitor: payments whose webhook never came ------------------------------------------------

# Payments the janitor still asks about. A cancelled one was given up by the payer or superseded,
# but the provider may still take money for it.
RECHECKABLE_STATES = (S.PENDING, S.PROCESSING, S.CANCELLED)


def _recheck_time(start: datetime, checks_done: int) -> datetime | None:
    """When to ask the provider for the (checks_done + 1)-th time, counted from ``start``; None
    when the schedule is used up."""
    schedule = settings.PAYMENT_RECHECK_SCHEDULE_SECONDS
    if checks_done >= len(schedule):
        return None
    return start + timedelta(seconds=schedule[checks_done])


def payments_recheck_due(*, now: datetime | None = None, limit: int = 500) -> list[uuid.UUID]:
    """Celery beat: enqueue one status check per provider payment whose check is due.

    A payment is claimed by moving its ``next_check_at`` ahead (rows another janitor or a
    webhook holds are skipped, not waited for), so two janitors never ask twice at once.
    Payments settled meanwhile (by their webhook) simply leave the schedule.
    """
    now = now or timezone.now()
    Payment.objects.filter(next_check_at__lte=now).exclude(status__in=RECHECKABLE_STATES).update(next_check_at=None)
    from payments.tasks import payment_status_recheck_task

    with transaction.atomic():
        due = Payment.objects.filter(
            next_check_at__lte=now,
            status__in=RECHECKABLE_STATES,
            method=PaymentMethod.PROVIDER,
            account__isnull=False,
        ).order_by("next_check_at")
        payment_ids = list(
            due.select_for_update(skip_locked=True, no_key=True, of=("self",)).values_list("pk", flat=True)[:limit]
        )
        Payment.objects.filter(pk__in=payment_ids).update(
            next_check_at=now + timedelta(seconds=settings.PAYMENT_RECHECK_CLAIM_SECONDS)
        )
        for payment_id in payment_ids:
            enqueue_on_commit(payment_status_recheck_task, str(payment_id))
    if payment_ids:
        logger.info("janitor: %d payments to re-check", len(payment_ids))
    return payment_ids


def payment_status_recheck(*, payment_id: uuid.UUID, now: datetime | None = None) -> str:
    """Ask the provider about one payment left open with no webhook, and act on the answer:

    - settled (succeeded, failed, ...): applied like a webhook, through the same state machine
      and ``payment_finalize``;
    - still open: asked again at the next step of ``PAYMENT_RECHECK_SCHEDULE_SECONDS``; after
      the last one the payment expires (a success the provider confirms later is still taken);
    - provider unreachable: tried again later, and never expired on that account (we do not
      know what happened, so we keep asking, once per last interval).

    The provider is asked with no lock held. Every check is audited (``payment.rechecked``).
    """
    payment = Payment.objects.select_related("account", "school").get(pk=payment_id)
    if payment.status not in RECHECKABLE_STATES or payment.account is None or payment.is_manual:
        Payment.objects.filter(pk=payment.pk).update(next_check_at=None)
        return "not open"
    adapter = get_provider(payment.provider)
    answer: NormalizedStatus | None = None
    error = ""
    unreachable = False
    try:
        answer = adapter.fetch_status(payment=payment)
    except ProviderUnavailable as exc:
        error, unreachable = exc.detail, True
    except ProviderError as exc:  # refused or not supported: the provider cannot tell us
        error = exc.detail
    except Exception as exc:  # a bug in an adapter must not stop the janitor for everyone
        logger.exception("fetch_status of %s failed for payment %s", payment.provider, payment.pk)
        error, unreachable = f"{type(exc).__name__}: {exc}", True

    note = "no answer"
    if answer is not None:
        note = f"provider says {answer.status}"
        if answer.status != payment.status and answer.status != S.PENDING:
            note = payment_apply_provider_status(payment_id=payment.pk, status=answer, source="janitor").note

    now = now or timezone.now()
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).get(pk=payment_id)
        payment.status_checks += 1
        payment.last_check_error = error[:2000]
        changed = {"status_checks", "last_check_error", "next_check_at", "updated_at"}
        expired = False
        if payment.status not in RECHECKABLE_STATES:
            payment.next_check_at = None
        else:
            start = payment.checkout_created_at or payment.created_at
            # Times are counted from the checkout, so a janitor that was down catches up at once.
            payment.next_check_at = _recheck_time(start, payment.status_checks)
            if payment.next_check_at is None:
                if unreachable:
                    payment.next_check_at = now + timedelta(seconds=settings.PAYMENT_RECHECK_SCHEDULE_SECONDS[-1])
                elif payment.status in IN_FLIGHT_STATES:
                    _set_status(payment, S.EXPIRED, changed)
                    expired = True
        payment.save(update_fields=sorted(changed))
        audit_record(
            action="payment.rechecked",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="janitor",
            school_id=payment.school_id,
            target=payment,
            details={
                "check": payment.status_checks,
                "answer": str(answer.status) if answer else None,
                "error": error[:500],
                "note": note,
                "status": payment.status,
                "next_check_at": payment.next_check_at.isoformat() if payment.next_check_at else None,
            },
        )
        if expired:
            audit_record(
                action="payment.expired",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="janitor",
                school_id=payment.school_id,
                target=payment,
                details={"checks": payment.status_checks, "reason": "still open after the last scheduled check"},
            )
    return "expired" if expired else note


# --- The dummy provider's checkout page ------------------------------------------------------------


def dummy_payment_simulate(
    *, payment_id: uuid.UUID, outcome: Literal["succeeded", "failed"], amount_minor: int | None = None
) -> Payment:
    """Record what the payer did on the dummy provider's checkout page: this is the dummy
    "provider's" own state, which its ``fetch_status`` reads back. The first answer is final,
    as at a real provider (a double click does not pay twice)."""
    if outcome not in ("succeeded", "failed"):
        raise ValueError(f"unknown outcome {outcome!r}")
    with transaction.atomic():
        payment = Payment.objects.select_for_update(no_key=True, of=("self",)).select_related("account").get(
            pk=payment_id, provider="dummy", method=PaymentMethod.PROVIDER
        )
        if "dummy" not in payment.provider_data:
            payment.provider_data = {
                **payment.provider_data,
                "dummy": {
                    "outcome": outcome,
                    "txn_id": f"dtxn_{secrets.token_hex(8)}",
                    "amount_minor": payment.amount_minor if amount_minor is None else amount_minor,
                    "currency": payment.currency,
                    "at": timezone.now().isoformat(),
                },
            }
            payment.save(update_fields=["provider_data", "updated_at"])
    return payment
