"""Celery tasks of the payments domain. Thin: each calls one service function.

The janitor: beat runs ``payments_recheck_due`` every minute; it claims the payments whose
status check is due and enqueues one ``payment_status_recheck`` per payment, which asks the
provider (``fetch_status``) and settles, reschedules or expires the payment.
"""

from __future__ import annotations

import uuid

from celery import shared_task

from config.celery import backoff_seconds
from core.errors import TransientError
from payments import services
from payments.services import parents as parent_services


@shared_task(name="payments.tasks.payments_recheck_due")
def payments_recheck_due_task() -> int:
    return len(services.payments_recheck_due())


# Idempotent: asking twice applies the same answer twice, which the state machine ignores; a lost
# message is found again once its claim (PAYMENT_RECHECK_CLAIM_SECONDS) runs out.
@shared_task(acks_late=True, name="payments.tasks.payment_status_recheck")
def payment_status_recheck_task(payment_id: str) -> str:
    return services.payment_status_recheck(payment_id=uuid.UUID(payment_id))


@shared_task(name="payments.tasks.refund_requests_recheck_due")
def refund_requests_recheck_due_task() -> int:
    return len(services.refund_requests_recheck_due())


# Idempotent: the provider's answer is a fact, and the same fact twice changes nothing; a refund
# is only sent again where the provider's idempotency key returns the first one.
@shared_task(acks_late=True, name="payments.tasks.refund_request_recheck")
def refund_request_recheck_task(refund_request_id: str) -> str:
    return services.refund_request_recheck(refund_request_id=uuid.UUID(refund_request_id))


# --- Messages to parents (payments.services.notices) ---------------------------------------------


# Idempotent: only the worker that claims the queued notice sends it; a redelivered message finds
# it claimed or done. A transient failure is retried with backoff (the notice keeps its state).
@shared_task(bind=True, acks_late=True, max_retries=None, name="payments.tasks.notice_deliver")
def notice_deliver_task(self, notice_id: str) -> str:
    outcome = services.notice_deliver(notice_id=uuid.UUID(notice_id))
    if outcome.retry_in is not None:
        # A second past the notice's next_attempt_at, so the retry finds it due.
        raise self.retry(countdown=outcome.retry_in + 1)
    return outcome.status


# Idempotent (one receipt, one confirmation per channel: unique rows), so any failure (the database
# gone for a moment) is simply retried, with backoff.
@shared_task(
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=8,
    name="payments.tasks.payment_receipt_issue",
)
def payment_receipt_issue_task(payment_id: str) -> int:
    return len(services.payment_receipt_issue(payment_id=uuid.UUID(payment_id)))


@shared_task(name="payments.tasks.payment_reminders_due")
def payment_reminders_due_task() -> int:
    return len(services.payment_reminders_due())


@shared_task(name="payments.tasks.notices_sweep")
def notices_sweep_task() -> int:
    return len(services.notices_sweep())
# Idempotent: a link already sent is not sent again. An unreachable mail server is retried with
# backoff; a refused address is recorded and not.
@shared_task(bind=True, acks_late=True, max_retries=8, name="payments.tasks.parent_link_send")
def parent_link_send_task(self, link_id: int) -> str:
    try:
        return parent_services.parent_link_send(link_id=link_id)
    except TransientError as exc:
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
