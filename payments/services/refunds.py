"""Staff refunds: requested, sent to the provider's refund API, followed until it answers."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.celery import enqueue_on_commit
from core.money import MAX_MINOR_AMOUNT, MoneyError, format_minor, parse_major_amount
from core.status import PaymentStatus
from payments import locks, selectors
from payments.audit import audit_record
from payments.ledger import FactKind, FactSource, RefundStatus
from payments.models import (
    AuditLog,
    Payment,
    RefundRequest,
    TransactionFact,
)
from payments.services.facts import facts_add
from payments.services.refund_sync import REFUND_REASON_MAX_CHARS, refund_adapter
from payments.services.settlement import PaymentChange, payment_lock, payment_settle
from payments.state import SETTLED_STATES
from providers.base import RefundResult
from providers.errors import (
    OperationNotSupported,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import get_provider

logger = logging.getLogger(__name__)

class RefundInvalid(Exception):
    """Input that cannot become a refund; ``errors`` maps a field to a message for staff."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


class RefundRefused(Exception):
    """The refund cannot be made now. ``code`` says why; ``detail`` is for staff."""

    def __init__(self, code: str, detail: str, refund_request: RefundRequest | None = None):
        self.code = code
        self.detail = detail
        self.refund_request = refund_request
        super().__init__(detail)


@dataclass(frozen=True)
class RefundStarted:
    refund_request: RefundRequest
    created: bool  # False: the caller's Idempotency-Key named a refund already made


def refund_request_create(
    *,
    payment_id: uuid.UUID,
    reason: str,
    actor,
    amount: str | None = None,
    amount_minor: int | None = None,
    client_key: str = "",
) -> RefundStarted:
    """Staff refund ``amount_minor`` of a payment, with a reason.

    Under the payment's row lock: refused beyond what is left (received, less refunded, charged
    back and refunds asked for and not failed), while a dispute is open, and while another refund
    of the payment waits for its provider's answer; then the request is recorded (audit
    ``refund.requested``). A provider with a refund API is then asked, with no lock held
    (``refund_request_send``); a refund made by hand is recorded at once as a staff fact keyed
    ``manual:<request id>``. The amount is ``amount`` in major units of the payment's currency
    (``"120,000"``, parsed strictly) or ``amount_minor``. ``client_key`` (the API's
    Idempotency-Key) makes a repeated call answer the first request. Raises ``RefundInvalid``
    (bad input) or ``RefundRefused``.
    """
    errors: dict[str, str] = {}
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = "Say why the money goes back."
    elif len(reason) > REFUND_REASON_MAX_CHARS:
        errors["reason"] = f"At most {REFUND_REASON_MAX_CHARS} characters."
    client_key = (client_key or "").strip()
    if len(client_key) > 255:
        errors["idempotency_key"] = "At most 255 characters."
    actor_name = actor.get_username()
    with transaction.atomic():
        payment = locks.payment(payment_id, related=("account", "school"))
        if not selectors.user_can_access_school(user=actor, school_id=payment.school_id):
            raise RefundRefused("not_your_school", "You are not staff of this payment's school.")
        amount_minor = _refund_amount(amount=amount, amount_minor=amount_minor, currency=payment.currency, errors=errors)
        if errors:
            raise RefundInvalid(errors)
        if client_key:
            existing = RefundRequest.objects.filter(payment=payment, client_key=client_key).first()
            if existing is not None:
                if (existing.amount_minor, existing.reason) != (amount_minor, reason):
                    raise RefundRefused(
                        "idempotency_key_reused",
                        "This Idempotency-Key was already used for another refund of this payment.",
                        existing,
                    )
                return RefundStarted(existing, created=False)
        adapter = refund_adapter(payment=payment)
        _refund_check_allowed(payment=payment, amount_minor=amount_minor)
        refund_request = RefundRequest(
            id=uuid.uuid4(),
            school_id=payment.school_id,
            payment=payment,
            method=RefundRequest.Method.PROVIDER if adapter else RefundRequest.Method.MANUAL,
            amount_minor=amount_minor,
            currency=payment.currency,
            reason=reason,
            client_key=client_key,
            requested_by=actor if getattr(actor, "pk", None) else None,
            requested_by_name=actor_name,
        )
        refund_request.idempotency_key = f"refund-{refund_request.id.hex}"
        if adapter is None:
            refund_request.ledger_key = f"manual:{refund_request.id}"
        try:
            with transaction.atomic():
                refund_request.save(force_insert=True)
        except IntegrityError as exc:  # the payment's lock makes this a backstop only
            raise RefundRefused("refund_in_progress", "Another refund of this payment is being made.") from exc
        audit_record(
            action="refund.requested",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor_name,
            school_id=payment.school_id,
            target=refund_request,
            details={
                "payment_id": str(payment.pk),
                "provider": payment.provider,
                "method": refund_request.method,
                "amount_minor": amount_minor,
                "currency": payment.currency,
                "reason": reason,
            },
        )
        if adapter is None:
            # Made by hand (cash, bank transfer): staff's word is the fact.
            _refund_fact_record(
                payment=payment,
                key=refund_request.ledger_key,
                status=RefundStatus.SUCCEEDED,
                amount_minor=amount_minor,
                source=FactSource.STAFF,
                source_ref=actor_name,
                actor_type=AuditLog.ActorType.STAFF,
                actor=actor_name,
                details={"refund_request": str(refund_request.pk), "reason": reason, "method": "manual"},
            )
            refund_request.refresh_from_db()
            return RefundStarted(refund_request, created=True)
    return RefundStarted(refund_request_send(refund_request_id=refund_request.pk), created=True)


def _refund_amount(*, amount: str | None, amount_minor: int | None, currency: str, errors: dict[str, str]) -> int:
    """The refund's amount in minor units, from exactly one of ``amount`` (major units, parsed
    strictly for the currency) and ``amount_minor``; a problem goes into ``errors``."""
    given = [value for value in (amount, amount_minor) if value not in (None, "")]
    if len(given) != 1:
        errors["amount"] = "Give the amount (major units) or amount_minor, not both." if given else "This field is required."
        return 0
    if amount_minor not in (None, ""):
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            errors["amount_minor"] = "Must be a whole number of minor units."
            return 0
        field_name, minor = "amount_minor", amount_minor
    else:
        field_name = "amount"
        try:
            minor = parse_major_amount(amount.strip() if isinstance(amount, str) else amount, currency)
        except MoneyError as exc:
            errors["amount"] = str(exc)
            return 0
    if minor <= 0:
        errors[field_name] = "Must be greater than zero."
    elif minor > MAX_MINOR_AMOUNT:
        errors[field_name] = f"amount_minor {minor} is implausibly large"
    return minor


def _refund_check_allowed(*, payment: Payment, amount_minor: int) -> None:
    """Inside the caller's transaction, the payment row locked."""
    if payment.status == PaymentStatus.DISPUTED:
        raise RefundRefused(
            "payment_disputed", "A dispute of this payment is open: the provider holds the money until it is decided."
        )
    if payment.status not in SETTLED_STATES:
        raise RefundRefused(
            "payment_not_refundable",
            f"Only money the school received can be refunded; this payment is {payment.get_status_display().lower()}.",
        )
    unanswered = RefundRequest.objects.filter(
        payment=payment, status__in=(RefundRequest.Status.REQUESTED, RefundRequest.Status.IN_DOUBT)
    ).first()
    if unanswered is not None:
        raise RefundRefused(
            "refund_in_progress",
            "Another refund of this payment is waiting for the provider's answer"
            + (": its answer was lost, check it first." if unanswered.status == RefundRequest.Status.IN_DOUBT else "."),
            unanswered,
        )
    balance = selectors.payment_refund_balance(payment=payment)
    if amount_minor > balance.left_minor:
        money = lambda minor: format_minor(minor, balance.currency)  # noqa: E731
        parts = [f"{money(balance.received_minor)} received"]
        if balance.refunded_minor:
            parts.append(f"{money(balance.refunded_minor)} refunded")
        if balance.charged_back_minor:
            parts.append(f"{money(balance.charged_back_minor)} charged back")
        if balance.on_the_way_minor:
            parts.append(f"{money(balance.on_the_way_minor)} of refunds on their way")
        raise RefundRefused(
            "refund_exceeds_balance",
            f"At most {money(balance.left_minor)} can be refunded ({', '.join(parts)}).",
        )


def refund_request_send(*, refund_request_id: uuid.UUID) -> RefundRequest:
    """Ask the provider for a recorded refund and record its answer. No lock is held during the
    call. A refusal fails the request (nothing was refunded); an answer that never arrived
    leaves it ``in_doubt``: the refund may or may not have been made."""
    refund_request = RefundRequest.objects.select_related("payment__account", "payment__school").get(
        pk=refund_request_id
    )
    if refund_request.status != RefundRequest.Status.REQUESTED:
        return refund_request
    payment = refund_request.payment
    adapter = get_provider(payment.provider)
    try:
        result = adapter.refund(
            payment=payment,
            amount_minor=refund_request.amount_minor,
            idempotency_key=refund_request.idempotency_key,
            reason=refund_request.reason,
        )
    except ProviderUnavailable as exc:
        return _refund_request_unanswered(refund_request_id=refund_request.pk, error=exc.detail)
    except (ProviderRejected, OperationNotSupported) as exc:
        return _refund_request_refused(refund_request_id=refund_request.pk, error=exc.detail)
    except Exception as exc:  # a bug in an adapter: whether the provider got the request is unknown
        logger.exception("refund of %s failed for refund request %s", payment.provider, refund_request.pk)
        return _refund_request_unanswered(refund_request_id=refund_request.pk, error=f"{type(exc).__name__}: {exc}")
    return _refund_answer_record(refund_request_id=refund_request.pk, result=result, source_ref="refund answer")


def _refund_request_locked(refund_request_id: uuid.UUID) -> tuple[Payment, RefundRequest]:
    """Lock order everywhere: the payment, then its refund request."""
    payment_id = RefundRequest.objects.filter(pk=refund_request_id).values_list("payment_id", flat=True).get()
    payment = payment_lock(payment_id=payment_id)
    return payment, locks.refund_request(refund_request_id)


def _refund_answer_record(*, refund_request_id: uuid.UUID, result: RefundResult, source_ref: str) -> RefundRequest:
    """What the provider answered about the refund (when asked for it, or asked about it later)
    becomes a fact keyed by its refund id; the request then follows the ledger."""
    now = timezone.now()
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        adapter = get_provider(payment.provider)
        first_answer = not refund_request.provider_refund_id
        if first_answer:
            refund_request.provider_refund_id = result.refund_id[:255]
            refund_request.ledger_key = refund_request.ledger_key or refund_request.provider_refund_id
            refund_request.submitted_at = now
            refund_request.attempts += 1
        refund_request.error = ""
        if refund_request.unanswered:
            refund_request.status = RefundRequest.Status.SUBMITTED
        refund_request.next_check_at = _refund_next_check(refund_request, adapter=adapter, now=now)
        refund_request.save()
        status = result.status
        if status == RefundStatus.SUCCEEDED and not adapter.refund_events_name_the_refund:
            # This provider's webhook reports the same refund under another key: it is the one
            # that counts the money (refund_requests_sync), so ours stays on its way until then.
            status = RefundStatus.PENDING
        details = {
            "refund_request": str(refund_request.pk),
            "provider_refund_id": refund_request.provider_refund_id,
            "provider_status": result.detail[:200],
        }
        if result.amount_minor != refund_request.amount_minor:
            details["requested_minor"] = refund_request.amount_minor
        _refund_fact_record(
            payment=payment,
            key=refund_request.provider_refund_id,
            status=status,
            amount_minor=result.amount_minor,
            source=FactSource.PROVIDER_API,
            source_ref=f"{source_ref} {refund_request.pk}",
            actor_type=AuditLog.ActorType.PROVIDER,
            actor=payment.provider,
            details=details,
        )
        if first_answer:
            audit_record(
                action="refund.submitted",
                actor_type=AuditLog.ActorType.PROVIDER,
                actor=payment.provider,
                school_id=payment.school_id,
                target=refund_request,
                details={"provider_refund_id": refund_request.provider_refund_id, "provider_status": result.detail[:200]},
            )
        refund_request.refresh_from_db()
    return refund_request


def _refund_request_unanswered(*, refund_request_id: uuid.UUID, error: str) -> RefundRequest:
    """The provider's answer never arrived: the refund may have been made. Where the provider's
    idempotency key makes it safe, it is sent again later with the same key; elsewhere staff
    check the provider's dashboard and resolve it (``refund_request_resolve``)."""
    now = timezone.now()
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        refund_request.attempts += 1
        refund_request.error = error[:2000]
        if refund_request.status == RefundRequest.Status.REQUESTED:
            refund_request.status = RefundRequest.Status.IN_DOUBT
        refund_request.next_check_at = _refund_next_check(refund_request, adapter=get_provider(payment.provider), now=now)
        refund_request.save()
        audit_record(
            action="refund.in_doubt",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=payment.provider,
            school_id=payment.school_id,
            target=refund_request,
            details={"error": error[:500], "resent_by_itself": refund_request.next_check_at is not None},
        )
    return refund_request


def _refund_request_refused(*, refund_request_id: uuid.UUID, error: str) -> RefundRequest:
    """The provider refused: nothing was refunded, the amount is free again."""
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        refund_request.attempts += 1
        refund_request.error = error[:2000]
        if refund_request.unanswered:
            refund_request.status = RefundRequest.Status.FAILED
            refund_request.finished_at = timezone.now()
            refund_request.next_check_at = None
        refund_request.save()
        audit_record(
            action="refund.refused",
            actor_type=AuditLog.ActorType.PROVIDER,
            actor=payment.provider,
            school_id=payment.school_id,
            target=refund_request,
            details={"error": error[:500]},
        )
    return refund_request


def _refund_next_check(refund_request: RefundRequest, *, adapter, now: datetime) -> datetime | None:
    """When to ask the provider about the refund again, or send it again: a refund on its way is
    asked about (where the provider's API can say) on ``REFUND_RECHECK_SCHEDULE_SECONDS`` from
    when it was submitted; one whose answer was lost is sent again with the same key only where
    that key is honoured, and only while the provider remembers it."""
    schedule = settings.REFUND_RECHECK_SCHEDULE_SECONDS
    if refund_request.status == RefundRequest.Status.SUBMITTED:
        if not selectors.provider_reports_refunds(adapter) or refund_request.checks >= len(schedule):
            return None
        return (refund_request.submitted_at or now) + timedelta(seconds=schedule[refund_request.checks])
    if refund_request.status == RefundRequest.Status.IN_DOUBT and adapter.refund_idempotent:
        retry_at = now + timedelta(seconds=schedule[min(refund_request.checks, len(schedule) - 1)])
        if retry_at < refund_request.created_at + timedelta(seconds=adapter.refund_idempotency_window_seconds):
            return retry_at
    return None


def _refund_fact_record(
    *,
    payment: Payment,
    key: str,
    status: str,
    amount_minor: int,
    source: str,
    source_ref: str,
    actor_type: str,
    actor: str,
    details: dict[str, Any],
) -> PaymentChange:
    """One refund fact of a locked payment, then the payment settled from all its facts (audit
    ``payment.refund``), inside the caller's transaction."""
    fact = TransactionFact(
        kind=FactKind.REFUND,
        key=key[:255],
        status=status,
        amount_minor=amount_minor,
        currency=payment.currency,
        occurred_at=timezone.now(),
        source=source,
        source_ref=source_ref[:255],
    )
    facts_add(payment, [fact])
    return payment_settle(
        payment=payment,
        actor_type=actor_type,
        actor=actor,
        audit_action="payment.refund",
        details={**details, "refund_key": key, "refund_status": status},
    )


def refund_request_resolve(
    *, refund_request_id: uuid.UUID, decision: Literal["not_made", "send_again"], note: str, actor
) -> RefundRequest:
    """Staff resolve a refund whose provider answer was lost, after checking the provider's
    dashboard: it was not made there (the request fails and its amount is free again), or send it
    again with the same idempotency key. Audited as ``refund.resolved`` with the note."""
    note = (note or "").strip()
    if decision not in ("not_made", "send_again"):
        raise RefundInvalid({"decision": "Choose what the provider's dashboard shows."})
    if not note:
        raise RefundInvalid({"note": "Write what you checked."})
    with transaction.atomic():
        payment, refund_request = _refund_request_locked(refund_request_id)
        if not selectors.user_can_access_school(user=actor, school_id=refund_request.school_id):
            raise RefundRefused("not_your_school", "You are not staff of this payment's school.")
        if refund_request.status != RefundRequest.Status.IN_DOUBT:
            raise RefundRefused(
                "refund_not_in_doubt", f"This refund is {refund_request.get_status_display().lower()}: nothing to resolve."
            )
        refund_request.next_check_at = None
        if decision == "not_made":
            refund_request.status = RefundRequest.Status.FAILED
            refund_request.finished_at = timezone.now()
        else:
            refund_request.status = RefundRequest.Status.REQUESTED
        refund_request.save()
        audit_record(
            action="refund.resolved",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor.get_username(),
            school_id=refund_request.school_id,
            target=refund_request,
            details={"decision": decision, "note": note[:1000]},
        )
    if decision == "send_again":
        return refund_request_send(refund_request_id=refund_request.pk)
    return refund_request


def refund_requests_recheck_due(*, now: datetime | None = None, limit: int = 200) -> list[uuid.UUID]:
    """Celery beat: enqueue one ``refund_request_recheck`` per refund whose check is due,
    claiming each by moving its ``next_check_at`` ahead (rows another run holds are skipped)."""

    now = now or timezone.now()
    with transaction.atomic():
        due = RefundRequest.objects.filter(next_check_at__lte=now).order_by("next_check_at")
        refund_ids = list(locks.skip_locked(due).values_list("pk", flat=True)[:limit])
        RefundRequest.objects.filter(pk__in=refund_ids).update(
            next_check_at=now + timedelta(seconds=settings.PAYMENT_RECHECK_CLAIM_SECONDS)
        )
        for refund_id in refund_ids:
            enqueue_on_commit("payments.tasks.refund_request_recheck", str(refund_id))
    return refund_ids


def refund_request_recheck(*, refund_request_id: uuid.UUID) -> str:
    """Ask the provider where a submitted refund stands (its answer becomes a fact, like any
    other), or send again a refund whose answer was lost where the provider's idempotency key
    makes that safe. Asked with no lock held."""
    refund_request = RefundRequest.objects.select_related("payment__account").get(pk=refund_request_id)
    payment = refund_request.payment
    adapter = refund_adapter(payment=payment)
    if adapter is None:
        RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
        return "not a provider refund"
    if refund_request.status == RefundRequest.Status.IN_DOUBT:
        with transaction.atomic():
            _, refund_request = _refund_request_locked(refund_request_id)
            if refund_request.status != RefundRequest.Status.IN_DOUBT or _refund_next_check(
                refund_request, adapter=adapter, now=timezone.now()
            ) is None:
                RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
                return "left to staff"
            refund_request.status = RefundRequest.Status.REQUESTED
            refund_request.checks += 1
            refund_request.save(update_fields=["status", "checks", "updated_at"])
        return f"sent again: {refund_request_send(refund_request_id=refund_request.pk).status}"
    if refund_request.status != RefundRequest.Status.SUBMITTED or not refund_request.provider_refund_id:
        RefundRequest.objects.filter(pk=refund_request.pk).update(next_check_at=None)
        return "nothing to ask"
    RefundRequest.objects.filter(pk=refund_request.pk).update(checks=refund_request.checks + 1)
    try:
        result = adapter.refund_status(payment=payment, refund_id=refund_request.provider_refund_id)
    except ProviderError as exc:
        with transaction.atomic():
            _, refund_request = _refund_request_locked(refund_request_id)
            refund_request.error = exc.detail[:2000]
            refund_request.next_check_at = _refund_next_check(refund_request, adapter=adapter, now=timezone.now())
            refund_request.save(update_fields=["error", "next_check_at", "updated_at"])
        return f"no answer: {exc.detail}"
    refund_request = _refund_answer_record(refund_request_id=refund_request.pk, result=result, source_ref="refund check")
    return f"provider says {result.status}; refund {refund_request.status}"
