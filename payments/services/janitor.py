"""The janitor: payments not settled are asked about through the provider's API on a schedule."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.celery import enqueue_on_commit
from core.status import PaymentStatus
from payments import locks
from payments.audit import audit_record
from payments.ledger import FactSource
from payments.models import (
    AuditLog,
    Payment,
    PaymentMethod,
    ReviewFlag,
)
from payments.services.settlement import (
    payment_fact_add,
    payment_provider_status_apply,
    recheck_time,
)
from payments.state import IN_FLIGHT_STATES, SETTLED_STATES
from providers.base import NormalizedStatus
from providers.errors import (
    ProviderError,
    ProviderUnavailable,
)
from providers.registry import get_provider

logger = logging.getLogger(__name__)

def payments_recheck_due(*, now: datetime | None = None, limit: int = 500) -> list[uuid.UUID]:
    """Celery beat: enqueue one status check per provider payment whose check is due.

    A payment is claimed by moving its ``next_check_at`` ahead (rows another janitor or a
    webhook holds are skipped, not waited for), so two janitors never ask twice at once.
    Payments settled meanwhile leave the schedule when they settle (``payment_settle``).
    """
    now = now or timezone.now()

    with transaction.atomic():
        due = Payment.objects.filter(
            next_check_at__lte=now, method=PaymentMethod.PROVIDER, account__isnull=False
        ).order_by("next_check_at")
        payment_ids = list(
            locks.skip_locked(due).values_list("pk", flat=True)[:limit]
        )
        Payment.objects.filter(pk__in=payment_ids).update(
            next_check_at=now + timedelta(seconds=settings.PAYMENT_RECHECK_CLAIM_SECONDS)
        )
        for payment_id in payment_ids:
            enqueue_on_commit("payments.tasks.payment_status_recheck", str(payment_id))
    if payment_ids:
        logger.info("janitor: %d payments to re-check", len(payment_ids))
    return payment_ids


def payment_status_recheck(*, payment_id: uuid.UUID, now: datetime | None = None) -> str:
    """Ask the provider about one payment that is not settled (its webhook never came, or a
    refund is waiting for a success we have not heard of), and record the answer:

    - what the provider says is a fact like any other (``payment_provider_status_apply``): a
      payment the provider says is settled is settled;
    - still open: asked again at the next step of ``PAYMENT_RECHECK_SCHEDULE_SECONDS``; after
      the last one the payment expires (a success the provider confirms later is still taken);
    - provider unreachable through the whole schedule: flagged ``status_unknown`` for staff (the
      dashboard shows it) and still asked once per last interval, never expired on that account
      (we do not know what happened).

    The provider is asked with no lock held. Every check is audited (``payment.rechecked``).
    """
    payment = Payment.objects.select_related("account", "school").get(pk=payment_id)
    if payment.status in SETTLED_STATES or payment.account is None or payment.is_manual:
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
        says_more = answer.status not in (PaymentStatus.PENDING, payment.status) or answer.refunds or answer.refunded_total_minor
        if says_more:
            note = payment_provider_status_apply(payment_id=payment.pk, status=answer, source="janitor").note

    now = now or timezone.now()
    with transaction.atomic():
        payment = locks.payment(payment_id)
        payment.status_checks += 1
        payment.last_check_error = error[:2000]
        changed = {"status_checks", "last_check_error", "next_check_at", "updated_at"}
        expire = False
        if payment.status in SETTLED_STATES:
            payment.next_check_at = None
        else:
            start = payment.checkout_created_at or payment.created_at
            # Times are counted from the checkout, so a janitor that was down catches up at once.
            payment.next_check_at = recheck_time(start, payment.status_checks)
            if payment.next_check_at is None:
                if unreachable:
                    payment.next_check_at = now + timedelta(seconds=settings.PAYMENT_RECHECK_SCHEDULE_SECONDS[-1])
                    if payment.review_flag != ReviewFlag.STATUS_UNKNOWN:
                        payment.review_flag = ReviewFlag.STATUS_UNKNOWN
                        payment.review_flag_reason = (
                            f"{adapter.display_name} could not be asked about this payment through "
                            f"{payment.status_checks} checks: {error[:300]}"
                        )
                        changed |= {"review_flag", "review_flag_reason"}
                elif payment.status in IN_FLIGHT_STATES:
                    expire = True
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
        if expire:
            payment_fact_add(
                payment=payment, status=PaymentStatus.EXPIRED, source=FactSource.SYSTEM, source_ref="janitor",
                actor_type=AuditLog.ActorType.SYSTEM, actor="janitor", audit_action="payment.expired",
                details={"checks": payment.status_checks, "reason": "still open after the last scheduled check"},
            )  # fmt: skip
    return "expired" if expire else note
