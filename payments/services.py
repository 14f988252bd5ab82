"""Writes of the payments domain. Each business rule lives here once.

Service functions are keyword-only and named ``<thing>_<verb>``. Functions documented as
"inside the caller's transaction" expect the payment row to be locked already.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from payments.models import (
    AggregatorAccount,
    AuditLog,
    MappingStatus,
    Payment,
    ProviderStudentLink,
    School,
    Student,
)
from payments.money import MoneyError, currency_code
from payments.state import SETTLED_STATES, PaymentStatus, can_transition
from providers.base import NormalizedEvent, NormalizedStatus
from providers.errors import UnknownProvider
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
    payment.status = status
    payment.status_changed_at = timezone.now()
    changed |= {"status", "status_changed_at"}


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
            audit_record(
                action="payment.mapped",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor="directory",
                school_id=payment.school_id,
                target=payment,
                details={"student_number": student.student_number, "source": source},
            )
    return MappingStatus.MAPPED


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
    actor: str = "cli",
) -> tuple[AggregatorAccount, str]:
    """Connect a school to a provider. Returns the account and its webhook secret (generated
    when none is given, for the caller to show once)."""
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
            )
        except IntegrityError as exc:
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account") from exc
        audit_record(
            action="account.created",
            actor_type=AuditLog.ActorType.STAFF if actor != "cli" else AuditLog.ActorType.SYSTEM,
            actor=actor,
            school_id=school.pk,
            target=account,
            details={"provider": adapter.slug, "test_mode": test_mode},
        )
    return account, secret


# --- Webhook secret rotation ----------------------------------------------------------------------


def account_rotate_secret(
    *,
    school_code: str,
    provider: str,
    new_secret: str | None = None,
    grace_hours: float = 24,
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
