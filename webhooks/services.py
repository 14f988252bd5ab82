"""Webhook ingestion and follow-up processing.

The request path (``webhook_receive``): account look-up, signature, validation, then one
transaction that inserts the event (unique per account: the duplicate gate), creates or updates
the payment and writes the audit entry; the follow-up task is enqueued on commit. No outbound
HTTP call, a small fixed number of queries.

The follow-up (``webhook_event_process``, in a Celery task): maps the student through the School
Directory. Each event is claimed with a conditional update, so a redelivered task never runs
the work twice at once.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.celery import enqueue_on_commit
from payments import selectors
from payments.models import AggregatorAccount, AuditLog, WebhookEvent
from payments.services import audit_record, payment_apply_event, payment_mapping_fail, payment_student_map
from providers.base import NormalizedEvent, ProviderAdapter
from providers.errors import PayloadInvalid, PayloadMalformed, SignatureInvalid, SignatureMissing
from providers.registry import get_provider

logger = logging.getLogger(__name__)

# Never stored with an event: credentials of whoever called us.
_UNSTORED_HEADERS = {"authorization", "cookie", "proxy-authorization"}


class SchoolCodeMissing(Exception):
    detail = "Missing school code: send the X-School-Code header or use /api/webhooks/<provider>/<school_code>"


class AccountUnknown(Exception):
    detail = "Unknown or inactive school, or no active account with this provider"


@dataclass(frozen=True)
class WebhookReceipt:
    created: bool
    event_id: str
    status: str


def webhook_receive(
    *,
    provider_slug: str,
    school_code: str | None,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
) -> WebhookReceipt:
    """Authenticate, validate and store one delivery. Raises the exception that says why not:
    ``UnknownProvider``, ``SchoolCodeMissing``, ``AccountUnknown``, ``SignatureMissing``,
    ``SignatureInvalid``, ``PayloadMalformed`` or ``PayloadInvalid``."""
    adapter = get_provider(provider_slug)
    if not school_code or not school_code.strip():
        _audit_refusal(adapter, None, "school_code_missing", school_code, body, remote_addr)
        raise SchoolCodeMissing()
    account = selectors.account_for_webhook(provider=adapter.slug, school_code=school_code)
    if account is None:
        _audit_refusal(adapter, None, "account_unknown", school_code, body, remote_addr)
        raise AccountUnknown()
    try:
        event = adapter.verify_and_parse(body=body, headers=headers, account=account)
    except (SignatureMissing, SignatureInvalid) as exc:
        _audit_refusal(adapter, account, type(exc).__name__, school_code, body, remote_addr)
        raise
    except (PayloadMalformed, PayloadInvalid) as exc:
        webhook_dead_letter_record(
            adapter=adapter, account=account, exc=exc, body=body, headers=headers, remote_addr=remote_addr
        )
        raise
    return webhook_event_record(
        adapter=adapter, account=account, event=event, body=body, headers=headers, remote_addr=remote_addr
    )


def webhook_event_record(
    *,
    adapter: ProviderAdapter,
    account: AggregatorAccount,
    event: NormalizedEvent,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
) -> WebhookReceipt:
    """Store a verified event and apply it to its payment, exactly once.

    A racing duplicate is settled by the unique constraint on (account, event id): the loser's
    insert fails, its transaction rolls back, and it answers as a duplicate. Two different
    events racing to create the same payment collide on (account, transaction id); the loser
    retries once and then finds the payment.
    """
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                payment = selectors.payment_for_event_locked(account=account, event=event)
                new_payment_id = uuid.uuid4()
                stored = WebhookEvent.objects.create(
                    account=account,
                    school_id=account.school_id,
                    provider=adapter.slug,
                    external_event_id=event.event_id,
                    event_type=event.event_type,
                    # The foreign key is checked at commit, after the payment is inserted.
                    payment_id=payment.pk if payment else (new_payment_id if event.status else None),
                    verification=adapter.verification_method
                    + ("; confirmed with the provider's API" if event.requires_confirmation else ""),
                    normalized=event.as_json(),
                    raw_body=body.decode("utf-8", errors="replace"),
                    headers=_storable_headers(headers),
                    body_sha256=hashlib.sha256(body).hexdigest(),
                    remote_addr=remote_addr,
                )
                payment_apply_event(payment=payment, new_payment_id=new_payment_id, account=account, event=event)
                from webhooks.tasks import webhook_event_process_task

                enqueue_on_commit(webhook_event_process_task, stored.pk)
            return WebhookReceipt(created=True, event_id=event.event_id, status=stored.status)
        except IntegrityError:
            existing = (
                WebhookEvent.objects.filter(account=account, external_event_id=event.event_id)
                .values_list("status", flat=True)
                .first()
            )
            if existing is not None:
                return WebhookReceipt(created=False, event_id=event.event_id, status=existing)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def webhook_dead_letter_record(
    *,
    adapter: ProviderAdapter,
    account: AggregatorAccount,
    exc: PayloadMalformed | PayloadInvalid,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
) -> WebhookEvent:
    """Keep a signed but invalid delivery as a rejected event (the dead-letter queue).

    The same body delivered again (providers retry on 400) bumps the existing dead letter's
    attempt count instead of adding a row.
    """
    body_sha256 = hashlib.sha256(body).hexdigest()
    errors = exc.errors if isinstance(exc, PayloadInvalid) else [{"field": "(body)", "message": exc.detail}]
    try:
        with transaction.atomic():
            return WebhookEvent.objects.create(
                account=account,
                school_id=account.school_id,
                provider=adapter.slug,
                external_event_id=None,
                event_type=getattr(exc, "event_type", ""),
                status=WebhookEvent.Status.REJECTED,
                verification=adapter.verification_method,
                raw_body=body.decode("utf-8", errors="replace"),
                headers=_storable_headers(headers),
                body_sha256=body_sha256,
                errors=errors,
                last_error=exc.detail,
                attempts=1,
                remote_addr=remote_addr,
            )
    except IntegrityError:
        dead_letter = WebhookEvent.objects.get(
            account=account, body_sha256=body_sha256, status=WebhookEvent.Status.REJECTED
        )
        WebhookEvent.objects.filter(pk=dead_letter.pk).update(attempts=F("attempts") + 1)
        return dead_letter


def _audit_refusal(
    adapter: ProviderAdapter,
    account: AggregatorAccount | None,
    reason: str,
    school_code: str | None,
    body: bytes,
    remote_addr: str | None,
) -> None:
    # No payload and no signature: only enough to investigate who knocked.
    audit_record(
        action="webhook.refused",
        actor_type=AuditLog.ActorType.PROVIDER,
        actor=adapter.slug,
        school_id=account.school_id if account else None,
        target=account,
        details={
            "reason": reason,
            "school_code": (school_code or "")[:64],
            "remote_addr": remote_addr,
            "body_bytes": len(body),
        },
    )


def _storable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in _UNSTORED_HEADERS}


# --- Follow-up processing (Celery) ---------------------------------------------------------------


def webhook_event_claim(*, event_id: int) -> WebhookEvent | None:
    """Claim an event for processing with one conditional update; None if it is done or another
    worker holds a fresh claim."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.WEBHOOK_CLAIM_TIMEOUT_SECONDS)
    claimed = WebhookEvent.objects.filter(
        Q(status=WebhookEvent.Status.PENDING) | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=stale),
        pk=event_id,
    ).update(status=WebhookEvent.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return WebhookEvent.objects.select_related("payment", "account").get(pk=event_id)


def webhook_event_process(*, event_id: int) -> str | None:
    """Run an event's follow-up work. Returns the result, or None when there was nothing to
    claim. Raises ``TransientError`` for the task to retry (after ``webhook_event_defer``)."""
    event = webhook_event_claim(event_id=event_id)
    if event is None:
        return None
    result = "processed"
    if event.payment_id is not None:
        mapping = payment_student_map(payment_id=event.payment_id)
        result = f"student {mapping}"
    WebhookEvent.objects.filter(pk=event.pk, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.PROCESSED,
        processed_at=timezone.now(),
        result=result,
        last_error="",
        next_attempt_at=None,
    )
    return result


def webhook_event_defer(*, event_id: int, error: str, retry_in_seconds: float) -> None:
    """Release the claim after a transient failure; the task retries at ``next_attempt_at``."""
    WebhookEvent.objects.filter(pk=event_id, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.PENDING,
        last_error=error[:2000],
        next_attempt_at=timezone.now() + timedelta(seconds=retry_in_seconds),
    )


def webhook_event_fail(*, event_id: int, error: str) -> None:
    """Retries are exhausted or the failure is permanent: leave it visibly failed for staff."""
    event = WebhookEvent.objects.get(pk=event_id)
    WebhookEvent.objects.filter(pk=event_id).update(
        status=WebhookEvent.Status.FAILED, last_error=error[:2000], next_attempt_at=None, processed_at=timezone.now()
    )
    if event.payment_id is not None:
        payment_mapping_fail(payment_id=event.payment_id, error=error)
    audit_record(
        action="webhook.failed",
        actor_type=AuditLog.ActorType.SYSTEM,
        school_id=event.school_id,
        target=event,
        details={"error": error[:500], "attempts": event.attempts},
    )


def webhook_events_sweep(*, limit: int = 500) -> list[int]:
    """Enqueue events that were stored but never processed: the broker was down when they
    arrived, a scheduled retry was lost, or a worker died holding a claim."""
    now = timezone.now()
    grace = timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS)
    stale_claim = now - timedelta(seconds=settings.WEBHOOK_CLAIM_TIMEOUT_SECONDS)
    due = WebhookEvent.objects.filter(
        Q(status=WebhookEvent.Status.PENDING, next_attempt_at__isnull=True, received_at__lt=now - grace)
        | Q(status=WebhookEvent.Status.PENDING, next_attempt_at__lt=now - grace)
        | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=stale_claim)
    ).order_by("received_at")
    event_ids = list(due.values_list("pk", flat=True)[:limit])
    if not event_ids:
        return []
    # Not again before another grace period, even if the queue is slow to drain.
    WebhookEvent.objects.filter(pk__in=event_ids, status=WebhookEvent.Status.PENDING).update(next_attempt_at=now)
    from webhooks.tasks import webhook_event_process_task

    for event_id in event_ids:
        enqueue_on_commit(webhook_event_process_task, event_id)
    logger.info("sweep enqueued %d unprocessed webhook events", len(event_ids))
    return event_ids

