"""Checkout: "Pay now" starts (or reuses) a payment with the provider; the payer gives one up."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from core.money import format_minor
from core.phone import PhoneInvalid, normalize_mpesa_phone
from core.status import PaymentStatus
from payments import locks, outbox, selectors
from payments.audit import audit_record
from payments.contact import ContactInvalid, parent_email_clean
from payments.ledger import FactSource
from payments.models import (
    AuditLog,
    MappingStatus,
    Payment,
    PaymentMethod,
    PaymentRequest,
    ProviderAccount,
)
from payments.services.settlement import RECHECKABLE_STATES, payment_fact_add, recheck_time
from payments.state import IN_FLIGHT_STATES
from providers.base import CheckoutResult, ReturnUrls
from providers.errors import (
    OperationNotSupported,
    ProviderRejected,
    ProviderUnavailable,
    UnknownProvider,
)
from providers.registry import get_provider

logger = logging.getLogger(__name__)

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
    amount_minor: int | None = None,
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

    ``amount_minor``: the part the payer chose, for a request that may be paid in parts; checked
    under the same lock against the balance and the minimum. None: the whole balance.
    """
    try:
        adapter = get_provider(provider)
    except UnknownProvider as exc:
        raise CheckoutRefused("provider_unknown", "This way of paying is not available.") from exc
    payer = {key: value for key, value in dict(payer or {}).items() if value not in (None, "")}
    needs_phone, needs_email = selectors.provider_needs_phone(adapter), selectors.provider_needs_email(adapter)
    if needs_phone or needs_email:
        # What the payer typed wins; else the contact staff gave the request.
        contact = PaymentRequest.objects.filter(pk=payment_request_id).values("parent_email", "parent_phone").first() or {}
        payer.setdefault("email", contact.get("parent_email") or "")
        payer.setdefault("phone", contact.get("parent_phone") or "")
    if needs_phone:
        try:
            payer["phone"] = normalize_mpesa_phone(str(payer.get("phone") or ""))
        except PhoneInvalid as exc:
            raise CheckoutRefused("phone_invalid", str(exc)) from exc
    if needs_email or payer.get("email"):
        if not payer.get("email"):
            raise CheckoutRefused(
                "email_required", f"Enter your email address: {adapter.display_name} needs it to take the payment."
            )
        try:
            payer["email"] = parent_email_clean(str(payer["email"]))
        except ContactInvalid as exc:
            raise CheckoutRefused("email_invalid", str(exc)) from exc
    payer = {key: value for key, value in payer.items() if value}

    deadline = time.monotonic() + settings.CHECKOUT_WAIT_SECONDS
    while True:
        decision, payment = _checkout_decide(
            payment_request_id=payment_request_id, adapter=adapter, payer=payer, amount_minor=amount_minor,
            actor_type=actor_type, actor=actor,
        )  # fmt: skip
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
    *, payment_request_id: int, adapter, payer: dict, amount_minor: int | None, actor_type: str, actor: str
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
            payment_request = locks.payment_request(payment_request_id, related=("school", "student"))
        except PaymentRequest.DoesNotExist as exc:
            raise CheckoutRefused("request_unknown", "This pay link is not valid.") from exc
        if payment_request.status == PaymentRequest.Status.PAID:
            raise CheckoutRefused("request_paid", "This has already been paid.")
        if payment_request.status != PaymentRequest.Status.OPEN or not payment_request.school.active:
            raise CheckoutRefused("request_closed", "This payment request is no longer open.")
        account = ProviderAccount.objects.filter(
            school_id=payment_request.school_id, provider=adapter.slug, active=True
        ).first()
        if account is None or not selectors.provider_supports_checkout(adapter):
            raise CheckoutRefused("provider_unavailable", "This way of paying is not available for this school.")
        amount_minor = checkout_amount(payment_request=payment_request, amount_minor=amount_minor)

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
            if attempt.amount_minor != amount_minor:
                raise CheckoutRefused(
                    "another_checkout_in_progress",
                    f"A payment of {format_minor(attempt.amount_minor, attempt.currency)} is already under way.",
                    attempt,
                )
            ready = attempt.checkout_created_at is not None or attempt.checkout_error
            return ("reuse" if ready else "wait"), attempt

        payment = Payment(
            school_id=payment_request.school_id,
            account=account,
            provider=adapter.slug,
            amount_minor=amount_minor,
            currency=payment_request.currency,
            status=PaymentStatus.PENDING,
            status_changed_at=now,
            payment_request=payment_request,
            method=PaymentMethod.PROVIDER,
            # The pay link names the student: nothing to look up in the School Directory.
            student=payment_request.student,
            provider_student_id=payment_request.student.student_number,
            mapping_status=MappingStatus.MAPPED,
            payer=payer,
            next_check_at=recheck_time(now, 0),
        )
        payment_insert_with_reference(payment, prefix="P")
        outbox.payment_events_record(
            payment=payment, created=True, previous=None, actor_type=actor_type, action="payment.intent"
        )
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


def checkout_amount(*, payment_request: PaymentRequest, amount_minor: int | None) -> int:
    """What this checkout asks for: the whole balance, or the part the payer chose when the
    request may be paid in parts (at least the minimum, or the whole balance when less is left;
    at most the balance). Called with the request's row locked, so the balance is current."""
    terms = selectors.request_installments(payment_request=payment_request)
    balance = terms.balance_minor
    if amount_minor is None:
        return balance
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise CheckoutRefused("amount_invalid", "Enter the amount you want to pay.")
    if not terms.allowed:
        if amount_minor != balance:
            raise CheckoutRefused(
                "amount_invalid", f"This school takes this fee in one payment of {format_minor(balance, payment_request.currency)}."
            )
        return balance
    if amount_minor > balance:
        raise CheckoutRefused(
            "amount_invalid", f"That is more than is due. Pay at most {format_minor(balance, payment_request.currency)}."
        )
    if amount_minor < terms.smallest_minor:
        raise CheckoutRefused(
            "amount_invalid", f"Pay at least {format_minor(terms.smallest_minor, payment_request.currency)} at a time."
        )
    return amount_minor


def _attempt_superseded(attempt: Payment, now: datetime) -> bool:
    """An attempt the payer never got a checkout for (the provider failed, or the process asking
    it died) does not block a new one. Only while pending: once the provider is processing it,
    money may be moving."""
    if attempt.status != PaymentStatus.PENDING:
        return False
    stale = now - timedelta(seconds=settings.CHECKOUT_STALE_SECONDS)
    return bool(attempt.checkout_error) or (attempt.checkout_created_at is None and attempt.created_at < stale)


def _payment_supersede(*, payment_id: uuid.UUID, actor_type: str, actor: str) -> None:
    """Cancel an attempt superseded by a new checkout (it stays on the janitor's list)."""
    with transaction.atomic():
        attempt = locks.payment(payment_id)
        if _attempt_superseded(attempt, timezone.now()):
            reason = attempt.checkout_error or "the checkout was never created"
            _payment_abandon_locked(attempt, reason=f"superseded: {reason}", actor_type=actor_type, actor=actor)


def payment_insert_with_reference(payment: Payment, *, prefix: str) -> None:
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
        payment = locks.payment(payment_id, related=("school", "payment_request"))
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
        payment.next_check_at = recheck_time(now, 0) if payment.status in RECHECKABLE_STATES else None
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
        payment = locks.payment(payment_id)
        payment.checkout_error = error[:2000] or "error"
        payment.save(update_fields=["checkout_error", "updated_at"])
        details = {"error": error[:500]}
        if fail:
            payment_fact_add(
                payment=payment, status=PaymentStatus.FAILED, source=FactSource.SYSTEM, source_ref="checkout refused",
                actor_type=AuditLog.ActorType.SYSTEM, actor=payment.provider, audit_action="payment.checkout_failed",
                details=details,
            )  # fmt: skip
        else:
            audit_record(
                action="payment.checkout_failed",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor=payment.provider,
                school_id=payment.school_id,
                target=payment,
                details={**details, "from": payment.status, "to": payment.status},
            )


def payment_checkout_abandon(*, payment_id: uuid.UUID, payment_request_id: int, actor_type: str, actor: str = "") -> Payment:
    """The payer gives up a checkout under way to choose another way to pay. Only a payment
    the provider has not started processing; it is cancelled here, and stays on the janitor's
    list: money that still arrives for it is taken (a confirmed success outranks a
    cancellation) and flagged if the request was paid another way meanwhile."""
    with transaction.atomic():
        payment = locks.payment(payment_id)
        if payment.payment_request_id != payment_request_id:
            raise Payment.DoesNotExist(f"payment {payment_id} is not of payment request {payment_request_id}")
        if payment.method != PaymentMethod.PROVIDER or payment.status not in IN_FLIGHT_STATES:
            return payment
        if payment.status != PaymentStatus.PENDING:
            raise CheckoutRefused(
                "checkout_processing", "The provider is already processing this payment; wait for its answer.", payment
            )
        _payment_abandon_locked(payment, reason="given up by the payer", actor_type=actor_type, actor=actor)
    return payment


def _payment_abandon_locked(payment: Payment, *, reason: str, actor_type: str, actor: str) -> None:
    payment_fact_add(
        payment=payment, status=PaymentStatus.CANCELLED, source=FactSource.SYSTEM, source_ref=reason, actor_type=actor_type,
        actor=actor, audit_action="payment.abandoned", details={"reason": reason},
    )  # fmt: skip
