"""Schools and their provider accounts: creating, switching, rotating the webhook secret."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.ip_allowlist import IpAllowlistInvalid, ip_allowlist_parse
from core.money import MoneyError, currency_code
from core.timezones import validate_time_zone
from payments import locks
from payments.audit import audit_record
from payments.models import (
    AuditLog,
    ProviderAccount,
    School,
)
from providers.errors import (
    UnknownProvider,
)
from providers.registry import get_provider, provider_slugs

logger = logging.getLogger(__name__)

# --- Onboarding -----------------------------------------------------------------------------------


class OnboardingError(Exception):
    """Bad input to an onboarding command; the message is one line for the operator."""


_SCHOOL_CODE_RE = r"^[a-z0-9][a-z0-9-]{0,31}$"


def school_create(*, code: str, name: str, currency: str, time_zone: str | None = None) -> School:
    code = code.strip().lower()
    if not re.fullmatch(_SCHOOL_CODE_RE, code):
        raise OnboardingError(f"invalid school code {code!r}: use 1-32 lower-case letters, digits or '-'")
    if not name.strip():
        raise OnboardingError("school name must not be empty")
    try:
        currency = currency_code(currency)
    except MoneyError as exc:
        raise OnboardingError(f"unknown currency {currency!r} (expected an ISO 4217 code such as UGX)") from exc
    zone = time_zone or settings.SCHOOL_TIME_ZONE
    try:
        validate_time_zone(zone)
    except ValidationError as exc:
        raise OnboardingError(exc.messages[0]) from exc
    with transaction.atomic():
        if School.objects.filter(code=code).exists():
            raise OnboardingError(f"school {code!r} already exists")
        try:
            school = School.objects.create(code=code, name=name.strip(), currency=currency, time_zone=zone)
        except IntegrityError as exc:  # a concurrent create won
            raise OnboardingError(f"school {code!r} already exists") from exc
        audit_record(
            action="school.created",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor="cli",
            school_id=school.pk,
            target=school,
            details={"code": code, "currency": currency, "time_zone": zone},
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
) -> tuple[ProviderAccount, str]:
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
        if ProviderAccount.objects.filter(school=school, provider=adapter.slug).exists():
            raise OnboardingError(f"school {school.code!r} already has a {adapter.slug} account")
        try:
            account = ProviderAccount.objects.create(
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
) -> tuple[ProviderAccount, list[str]]:
    """Change an account's switches; None leaves a field as it is. Secrets change only through
    ``account_rotate_secret``. Audited as ``account.updated`` with the changed fields' names and
    new values (none of them is a secret); a save that changes nothing writes nothing. Returns
    the account and the names of the changed fields."""
    if ip_allowlist is not None:
        _ip_allowlist_check(ip_allowlist)
    wanted = {"test_mode": test_mode, "active": active, "ip_allowlist": ip_allowlist}
    with transaction.atomic():
        account = locks.provider_account(account_id)
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
) -> tuple[ProviderAccount, str]:
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
        account = locks.provider_account_of(school_code=school_code.strip().lower(), provider=adapter.slug)
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
