"""Webhook ingestion (the request path) and processing (Celery).

The request path, ``webhook_receive``, is an inbox: account (cached), signature, validation, then
one INSERT of the event, unique per (account, provider event id), which is the duplicate gate,
with its ``webhook.received`` outbox row written by the same statement. Deliveries that a
process's threads have ready at the same moment share that statement and its commit
(``webhooks.inbox``). The id is published to Celery after commit. No outbound HTTP call, one query
for a new event.

Processing, ``webhook_event_process``, claims the event with a conditional update and applies it
to its payment in the same transaction, with the audit entry and the event's ``applied_at`` mark
(so an event is never applied twice). A student mapped before is set in that same transaction,
and an event with nothing left to do is marked processed by the same statement as
``applied_at``: about thirteen statements and one commit for the common case. Otherwise the
follow-up work comes after (``webhook_event_follow_up``): it asks the provider's API to confirm
events whose body is not bound to a secret, and maps a new student through the School Directory.
The worker applies a message's events together, in one transaction (``webhooks.batches``), and
comes back here, one event at a time, when that fails.

Replay (``webhooks.replay``) is staff's second go at a failed event or a dead letter (admin).

Why not apply the payment in the request: on a 2-core machine each ORM statement costs about as
much CPU as the whole bare "HMAC + one insert" request, and a provider only needs to know that
the event is safely stored. See docs/webhooks.md.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.celery import BatchPublisher, backoff_seconds, enqueue_on_commit, publish, tasks_run_inline
from config.metrics import webhook_processed
from core.errors import PermanentError, TransientError
from core.ip_allowlist import ip_allowlist_allows
from ops.context import current_request_id
from payments import locks as payment_locks
from payments import outbox
from payments.audit import audit_record
from payments.models import AuditLog, OutboxEvent, Payment, ProviderAccount, School, WebhookEvent
from payments.ratelimits import webhook_refusal_limit
from payments.services import (
    PaymentChange,
    payment_event_apply,
    payment_mapping_fail,
    payment_provider_status_apply,
    payment_student_map,
)
from providers.base import NormalizedEvent, ProviderAdapter, storable_text
from providers.errors import PayloadInvalid, PayloadMalformed, SignatureInvalid, SignatureMissing
from providers.registry import get_provider
from webhooks.dead_letters import webhook_dead_letter_record
from webhooks.inbox import EVENT_INBOX, BatchFailed, event_insert
from webhooks.selectors import account_for_webhook, account_of_event, storable_headers

logger = logging.getLogger(__name__)

# One attempt and eight retries, about 30 s, 1, 2, 4, 8, 16, 32 and 60 minutes apart: a
# directory outage of a few hours is ridden out, a longer one ends visibly failed.
MAX_ATTEMPTS = 9

PROCESS_TASK = "webhooks.tasks.webhook_events_process"

EVENT_PUBLISHER = BatchPublisher(PROCESS_TASK)


class SchoolCodeMissing(Exception):
    detail = "Missing school code: send the X-School-Code header or use /api/webhooks/<provider>/<school_code>"


class AccountUnknown(Exception):
    detail = "Unknown or inactive school, or no active account with this provider"


class IpNotAllowed(Exception):
    def __init__(self, address: str | None):
        super().__init__(address)
        self.detail = f"Address {address or '(unknown)'} is not in this account's IP allowlist"


@functools.cache
def _school_code_shape() -> re.Pattern:
    # School.code is a slug; its length comes from the model.
    return re.compile(r"\s*[-a-zA-Z0-9_]{1,%d}\s*" % School._meta.get_field("code").max_length)


def school_code_plausible(school_code: str) -> bool:
    return bool(_school_code_shape().fullmatch(school_code))


@dataclass(frozen=True)
class WebhookReceipt:
    created: bool
    event_id: str
    status: str
    reason: str = ""  # why an event is ignored


# --- The request path --------------------------------------------------------------------------


def webhook_receive(
    *,
    provider_slug: str,
    school_code: str | None,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
    query: Mapping[str, str] | None = None,
) -> WebhookReceipt:
    """Authenticate, validate and store one delivery. Raises the exception that says why not:
    ``UnknownProvider``, ``SchoolCodeMissing``, ``AccountUnknown``, ``IpNotAllowed``,
    ``SignatureMissing``, ``SignatureInvalid``, ``PayloadMalformed`` or ``PayloadInvalid``; or
    ``RateLimited`` instead of a refusal once an account (or an address) has too many of them.

    ``remote_addr`` is the client's address (``core.client_ip``).
    """
    adapter = get_provider(provider_slug)
    if not school_code or not school_code.strip():
        _audit_refusal(adapter, None, "school_code_missing", school_code, body, remote_addr)
        raise SchoolCodeMissing()
    # A code no school can have (the header says anything) is not looked up, nor cached.
    account = (
        account_for_webhook(provider=adapter.slug, school_code=school_code)
        if school_code_plausible(school_code)
        else None
    )
    if account is None:
        _audit_refusal(adapter, None, "account_unknown", school_code, body, remote_addr)
        raise AccountUnknown()
    # Before the signature: a refused address learns nothing about the secret. An account
    # without an allowlist pays one attribute test; a parsed allowlist is cached by its text.
    if account.ip_allowlist and not ip_allowlist_allows(account.ip_allowlist, remote_addr):
        _audit_refusal(adapter, account, "ip_not_allowed", school_code, body, remote_addr)
        raise IpNotAllowed(remote_addr)
    try:
        event = adapter.verify_and_parse(body=body, headers=headers, account=account, query=query)
    except (SignatureMissing, SignatureInvalid) as exc:
        _audit_refusal(adapter, account, type(exc).__name__, school_code, body, remote_addr)
        raise
    except (PayloadMalformed, PayloadInvalid) as exc:
        webhook_dead_letter_record(
            adapter=adapter, account=account, exc=exc, body=body, headers=headers, remote_addr=remote_addr
        )
        raise
    return webhook_event_store(
        adapter=adapter, account=account, event=event, body=body, headers=headers, remote_addr=remote_addr
    )


def webhook_event_store(
    *,
    adapter: ProviderAdapter,
    account: ProviderAccount,
    event: NormalizedEvent,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None,
) -> WebhookReceipt:
    """Store a verified event exactly once and publish it for processing after commit.

    A racing duplicate is settled by the unique constraint on (account, event id), not by a
    look-up first: the loser's insert is refused and it answers with the stored event's status.
    """
    # A genuine event with nothing in it to act on (a payout, a customer update, the other mode)
    # is kept, done at once with the reason, and never queued.
    received_at = timezone.now()
    ignored = {}
    if not event.concerns_payment:
        ignored = {"status": WebhookEvent.Status.IGNORED, "result": event.ignored_reason[:200], "processed_at": received_at}
    row = _webhook_event_row(
        account=account, event=event, body=body, headers=storable_headers(headers, adapter), remote_addr=remote_addr,
        received_at=received_at, ignored=ignored,
    )  # fmt: skip
    event_pk = _webhook_event_row_store(row)
    if event_pk is None:  # stored before: answered with the stored event's status
        existing = (
            WebhookEvent.objects.filter(account=account, external_event_id=event.event_id)
            .values_list("status", flat=True)
            .first()
        )
        if existing is None:
            raise IntegrityError(f"webhook event {event.event_id!r} of account {account.pk} could not be stored")
        return WebhookReceipt(created=False, event_id=event.event_id, status=existing)
    if ignored:
        return WebhookReceipt(True, event.event_id, WebhookEvent.Status.IGNORED, event.ignored_reason)
    # With the request's id, so the event's processing logs under it (ops.context).
    EVENT_PUBLISHER.add_on_commit((event_pk, current_request_id()))
    return WebhookReceipt(created=True, event_id=event.event_id, status=WebhookEvent.Status.PENDING)


def webhook_received_outbox(
    *, account: ProviderAccount, event: NormalizedEvent, received_at, ignored: bool
) -> OutboxEvent:
    """The ``webhook.received`` event of a stored provider event (unsaved; docs/events.md). The
    relay adds the provider's body when it publishes, so the request path writes no copy."""
    return OutboxEvent(
        event_id=uuid.uuid4(),
        event_type="webhook.received",
        version=outbox.EVENT_VERSIONS["webhook.received"],
        school_id=account.school_id,
        key=_webhook_received_key(account, event),
        payload=_webhook_received_payload(account=account, event=event, received_at=received_at, ignored=ignored),
        created_at=received_at,
    )


def _webhook_received_key(account: ProviderAccount, event: NormalizedEvent) -> str:
    return outbox.webhook_key(
        provider=account.provider, account_id=account.pk, txn_id=event.external_txn_id, event_id=event.event_id
    )


def _webhook_received_payload(*, account: ProviderAccount, event: NormalizedEvent, received_at, ignored: bool) -> dict:
    return {
        "provider": account.provider,
        "account_id": account.pk,
        "school_id": account.school_id,
        "provider_event_id": event.event_id,
        "event_type": event.event_type,
        "status": WebhookEvent.Status.IGNORED if ignored else WebhookEvent.Status.PENDING,
        "ignored_reason": event.ignored_reason if ignored else "",
        "external_txn_id": event.external_txn_id,
        "reference": event.reference,
        "reported_status": event.status.value if event.status else None,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "confirmed_by_signature": not event.requires_confirmation,
        "received_at": received_at.isoformat(),
    }


def _webhook_event_row(
    *, account: ProviderAccount, event: NormalizedEvent, body: bytes, headers: dict, remote_addr: str | None,
    received_at, ignored: dict,
) -> dict:
    """A delivery's event and its ``webhook.received`` outbox row, as plain values by column
    (``webhooks.inbox``): what the request path writes."""
    return {
        "account_id": account.pk,
        "external_event_id": event.event_id,
        "event_type": event.event_type,
        "raw_body": body.decode("utf-8", errors="replace"),
        "headers": headers,
        "remote_addr": remote_addr,
        "received_at": received_at,
        "status": ignored.get("status", WebhookEvent.Status.PENDING),
        "result": ignored.get("result", ""),
        "processed_at": ignored.get("processed_at"),
        "outbox_event_id": uuid.uuid4(),
        "outbox_event_type": "webhook.received",
        "outbox_version": outbox.EVENT_VERSIONS["webhook.received"],
        "outbox_school": account.school_id,
        "outbox_key": _webhook_received_key(account, event),
        "outbox_payload": _webhook_received_payload(
            account=account, event=event, received_at=received_at, ignored=bool(ignored)
        ),
    }  # fmt: skip


def _webhook_event_row_store(row: dict) -> int | None:
    """Store the row; return the new event's id, or None when its (account, event id) is stored
    already.

    Outside a transaction on PostgreSQL (a request), with the other requests' rows of the moment
    (``webhooks.inbox``); otherwise, or when that batch failed, alone.
    """
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        try:
            return EVENT_INBOX.store(row)
        except BatchFailed:
            pass
    return event_insert(row)


def _audit_refusal(
    adapter: ProviderAdapter,
    account: ProviderAccount | None,
    reason: str,
    school_code: str | None,
    body: bytes,
    remote_addr: str | None,
) -> None:
    # Past the limit of refusals (per account, or per address without one) the answer is 429
    # and nothing is written: a flood of forged deliveries costs a cache increment each.
    webhook_refusal_limit(account_id=account.pk if account else None, remote_addr=remote_addr)
    # No payload and no signature: only enough to investigate who knocked.
    audit_record(
        action="webhook.refused",
        actor_type=AuditLog.ActorType.PROVIDER,
        actor=adapter.slug,
        school_id=account.school_id if account else None,
        target=account,
        details={
            "reason": reason,
            "school_code": storable_text(school_code or "", 64),
            "remote_addr": remote_addr,
            "body_bytes": len(body),
        },
    )


# --- Processing (Celery) --------------------------------------------------------------------------


def webhook_event_run(*, event_id: int) -> str | None:
    """Process one event and decide what a failure means (``webhook_event_failure_record``)."""
    try:
        return webhook_event_process(event_id=event_id)
    except Exception as exc:  # noqa: BLE001 - transient errors and bugs alike are retried, then failed
        return webhook_event_failure_record(event_id=event_id, exc=exc)


def webhook_event_failure_record(*, event_id: int, exc: Exception) -> str:
    """A transient error is retried later with backoff, a permanent one (or the last attempt)
    leaves the event visibly failed."""
    if isinstance(exc, PermanentError):
        webhook_event_fail(event_id=event_id, error=str(exc))
        return "failed"
    if not isinstance(exc, TransientError):
        logger.error("processing webhook event %s failed", event_id, exc_info=exc)
    return webhook_event_retry_later(event_id=event_id, error=str(exc) or type(exc).__name__)


def webhook_event_claim(*, event_id: int) -> WebhookEvent | None:
    """Claim an event for processing with one conditional ``UPDATE … RETURNING``; None if it is
    done or another worker holds a fresh claim. Its account comes from the process's cache. Inside
    a transaction the claimed row stays locked until it ends: a second worker's claim waits, then
    finds the event processed (or still claimed) and gets None."""
    claimed = _claim(event_id, many=False)
    return claimed[0] if claimed else None


def webhook_events_claim(*, event_ids: list[int]) -> list[WebhookEvent]:
    """``webhook_event_claim`` for many events, with one statement (PostgreSQL: the ids travel as
    an array)."""
    return _claim(event_ids, many=True)


def _claim(ids, *, many: bool) -> list[WebhookEvent]:
    now = timezone.now()
    stale = now - timedelta(seconds=settings.WEBHOOK_CLAIM_TIMEOUT_SECONDS)
    claimed_at = WebhookEvent._meta.get_field("claimed_at")
    params = [
        WebhookEvent.Status.PROCESSING,
        claimed_at.get_db_prep_value(now, connection),
        ids,
        WebhookEvent.Status.PENDING,
        WebhookEvent.Status.PROCESSING,
        claimed_at.get_db_prep_value(stale, connection),
    ]
    events = list(WebhookEvent.objects.raw(_claim_sql(connection.vendor, many), params))
    for event in events:
        event.account = account_of_event(event.account_id)
    return events


@functools.cache
def _claim_sql(vendor: str, many: bool) -> str:
    meta, quote = WebhookEvent._meta, connection.ops.quote_name
    status, claimed_at, attempts = (quote(meta.get_field(name).column) for name in ("status", "claimed_at", "attempts"))
    which = "= ANY(%s)" if many else "= %s"
    return (
        f"UPDATE {quote(meta.db_table)} SET {status} = %s, {claimed_at} = %s, {attempts} = {attempts} + 1 "
        f"WHERE {quote(meta.pk.column)} {which} AND ({status} = %s OR ({status} = %s AND {claimed_at} < %s)) "
        "RETURNING *"
    )


def webhook_event_process(*, event_id: int) -> str | None:
    """Claim an event and apply it to its payment, confirm it with the provider's API when its
    body cannot be trusted alone, then map the payment's student. Returns the result, or None when
    there was nothing to claim.

    Most events need neither follow-up (the body is signed, the student is known): they are
    claimed, applied and marked processed in one transaction."""
    try:
        claimed = webhook_event_claim_and_apply(event_id=event_id)
    except Exception:
        # That transaction, its claim with it, was rolled back: the attempt is counted on its own
        # (``attempts`` bounds the retries), then the caller decides what the failure means.
        webhook_event_claim(event_id=event_id)
        raise
    if claimed is None:
        return None
    return webhook_event_follow_up(*claimed)


def webhook_event_follow_up(
    event: WebhookEvent, adapter: ProviderAdapter, normalized: NormalizedEvent, applied: EventApplied
) -> str:
    """What is left after the event was applied (outside any transaction, so no lock is held
    during a network call): confirm its body with the provider's API, map a new student; then
    mark it processed. Re-run on every retry until it succeeds; doing it twice changes nothing."""
    if applied.finished:
        _processed_observe(event, applied.processed_at)
        return applied.result
    result = applied.note
    if normalized.requires_confirmation and event.payment_id is not None:
        payment = Payment.objects.get(pk=event.payment_id)
        confirmed = adapter.fetch_status(payment=payment)
        change = payment_provider_status_apply(payment_id=payment.pk, status=confirmed, source=f"event {normalized.event_id}")
        result = f"{result}; confirmed: {change.note}"
    if event.payment_id is not None:
        result = f"{result}; student {payment_student_map(payment_id=event.payment_id)}"
    processed_at = timezone.now()
    done = WebhookEvent.objects.filter(pk=event.pk, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.PROCESSED,
        processed_at=processed_at,
        result=result[:200],
        last_error="",
        next_attempt_at=None,
    )
    if done:
        _processed_observe(event, processed_at)
    return result


def _processed_observe(event: WebhookEvent, processed_at) -> None:
    # ops: the processing lag, received -> processed
    webhook_processed(event.account.provider, (processed_at - event.received_at).total_seconds())


@dataclass(frozen=True)
class EventApplied:
    note: str  # what applying it did to the payment
    finished: bool = False  # applied and marked processed in the same transaction
    result: str = ""  # the event's stored result, when finished
    processed_at: object = None  # when it was applied (and processed, when finished)


def event_applied(normalized: NormalizedEvent, change: PaymentChange) -> EventApplied:
    """Whether anything is left to do after applying the event: not when its body needs no
    confirmation and its payment has its student (or none to look up)."""
    payment = change.payment
    finished = not normalized.requires_confirmation and (
        payment is None or payment.student_id is not None or not payment.provider_student_id
    )
    result = change.note if payment is None else f"{change.note}; student {payment.mapping_status}"
    return EventApplied(change.note, finished, result, timezone.now())


def webhook_event_claim_and_apply(
    *, event_id: int
) -> tuple[WebhookEvent, ProviderAdapter, NormalizedEvent, EventApplied] | None:
    """Claim the event and apply it to its payment once, in one transaction: the claim (which
    holds the event's row until commit, so no other worker applies it meanwhile), the payment
    change, its audit entry and the event's ``applied_at`` mark commit together. None when there
    is nothing to claim. Updates ``event.payment_id``.

    When nothing is left to do after it (the body needs no confirmation, the payment has its
    student or none to look up) the event is marked processed in the same statement."""
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                event = webhook_event_claim(event_id=event_id)
                if event is None:
                    return None
                adapter = get_provider(event.account.provider)
                # Verified on receipt; parsed again here so only the raw delivery needs storing.
                normalized = adapter.parse_body(
                    body=event.raw_body.encode("utf-8"), headers=event.headers, account=event.account
                )
                if event.applied_at is not None:
                    return event, adapter, normalized, EventApplied("applied before")
                change = payment_event_apply(
                    account=event.account, event=normalized, webhook_event_id=event.pk, received_at=event.received_at
                )
                event.payment_id = change.payment.pk if change.payment else None
                applied = event_applied(normalized, change)
                mark = {"payment_id": event.payment_id, "applied_at": applied.processed_at}
                if applied.finished:
                    mark.update(
                        status=WebhookEvent.Status.PROCESSED, processed_at=applied.processed_at,
                        result=applied.result[:200], last_error="", next_attempt_at=None,
                    )  # fmt: skip
                WebhookEvent.objects.filter(pk=event.pk).update(**mark)
            return event, adapter, normalized, applied
        except IntegrityError as exc:
            # Another worker created this transaction's payment first; now it will be found.
            if attempt == 2:
                # Still refused: the event names two payments (our reference or checkout id of
                # one, the transaction id of another). Retrying cannot settle that: staff must.
                raise EventConflict(
                    "Conflict: the event's reference or checkout id and its transaction id belong to "
                    f"different payments ({getattr(exc.__cause__, 'diag', None) and exc.__cause__.diag.constraint_name or 'unique'})"
                ) from exc
    raise AssertionError("unreachable")


class EventConflict(PermanentError):
    """An event that cannot be applied without breaking a payment's uniqueness."""


def webhook_event_retry_later(*, event_id: int, error: str) -> str:
    event = WebhookEvent.objects.only("attempts").get(pk=event_id)
    if event.attempts >= MAX_ATTEMPTS:
        webhook_event_fail(event_id=event_id, error=f"gave up after {event.attempts} attempts: {error}")
        return "failed"
    retry_in = backoff_seconds(event.attempts - 1)
    WebhookEvent.objects.filter(pk=event_id, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.PENDING,
        last_error=error[:2000],
        next_attempt_at=timezone.now() + timedelta(seconds=retry_in),
    )

    # Inline mode (development, no broker) would retry at once, inside the request; the event
    # stays pending for the sweep instead.
    if not tasks_run_inline():
        publish(PROCESS_TASK, ([event_id],), countdown=retry_in)
    return "retrying"


def webhook_event_fail(*, event_id: int, error: str) -> None:
    """Retries are exhausted or the failure is permanent: leave it visibly failed for staff.
    The event, its payment's mapping state and the audit entry change together."""
    with transaction.atomic():
        event = payment_locks.webhook_event(event_id)
        if event.payment_id is not None:
            payment_mapping_fail(payment_id=event.payment_id, error=error)
        WebhookEvent.objects.filter(pk=event_id).update(
            status=WebhookEvent.Status.FAILED,
            last_error=error[:2000],
            next_attempt_at=None,
            processed_at=timezone.now(),
        )
        audit_record(
            action="webhook.failed",
            actor_type=AuditLog.ActorType.SYSTEM,
            school_id=event.account.school_id,
            target=event,
            details={"error": error[:500], "attempts": event.attempts},
        )
        outbox.outbox_write(
            event_type="webhook.failed",
            school_id=event.account.school_id,
            key=outbox.webhook_key(
                provider=event.account.provider, account_id=event.account_id, txn_id="", event_id=event.external_event_id or ""
            ),
            payload={
                "provider": event.account.provider,
                "account_id": event.account_id,
                "school_id": event.account.school_id,
                "webhook_event_id": event.pk,
                "provider_event_id": event.external_event_id,
                "event_type": event.event_type,
                "payment_id": str(event.payment_id) if event.payment_id else None,
                "error": error[:500],
                "attempts": event.attempts,
            },
        )


def webhook_events_sweep(*, limit: int = 1000, batch_size: int = 100) -> list[int]:
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

    for start in range(0, len(event_ids), batch_size):
        enqueue_on_commit(PROCESS_TASK, event_ids[start : start + batch_size])
    logger.info("sweep enqueued %d unprocessed webhook events", len(event_ids))
    return event_ids
