"""Replay of webhook events by staff: a failed event is queued for processing again; a dead letter
is parsed again with today's adapter and, if valid now, becomes a pending event (or is superseded
by the provider's own redelivery)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from ops.context import current_request_id
from payments import locks as payment_locks
from payments.audit import audit_record
from payments.models import AuditLog, WebhookEvent
from providers.errors import PayloadInvalid, PayloadMalformed
from providers.registry import get_provider
from webhooks.dead_letters import dead_letter_errors
from webhooks.services import EVENT_PUBLISHER, webhook_received_outbox

logger = logging.getLogger(__name__)


class ReplayOutcome(enum.StrEnum):
    REQUEUED = "requeued"  # a failed event, pending again
    REVIVED = "revived"  # a dead letter that parses now, pending as a normal event
    SUPERSEDED = "superseded"  # a dead letter whose event the provider redelivered and we stored
    STILL_INVALID = "still_invalid"  # a dead letter that still fails validation
    PURGED = "purged"  # refused: the body is gone (retention)
    REFUSED = "refused"  # refused: neither failed nor a dead letter


@dataclass(frozen=True)
class ReplayResult:
    outcome: ReplayOutcome
    detail: str  # what staff are told


REPLAYABLE = (WebhookEvent.Status.FAILED, WebhookEvent.Status.REJECTED)


def webhook_event_replay(*, event_id: int, actor) -> ReplayResult:
    """Staff give a failed event or a dead letter another go; any other event is refused as it is.

    A failed event goes back to pending with its attempts reset and is published for processing
    the way a new event is; the worker's ``applied_at`` mark keeps its payment change from being
    applied twice. A dead letter's stored body is parsed again by the provider's current adapter,
    without the signature check: it passed that on receipt (nothing unsigned is stored), and a
    signed timestamp may have expired since. Valid now, it becomes a pending event with its
    provider event id, or ``superseded`` when the provider's redelivery of that event is stored
    already (the unique constraint decides, even against a delivery arriving this instant). Still
    invalid, it stays a dead letter with the fresh errors.

    The decision and the change happen under the event's row lock, so two staff replaying at once
    (or a replay and the retention purge) go in turn and the second finds the new status. Each
    replay that ran is audited (``webhook.replayed``); a refusal changes nothing and is not.
    """
    with transaction.atomic():
        # A revived dead letter gets its provider event id, a key.
        event = payment_locks.webhook_event(event_id, key_change=True)
        previous = event.status
        if previous not in REPLAYABLE:
            return ReplayResult(
                ReplayOutcome.REFUSED,
                f"Not replayed: the event is {event.get_status_display().lower()}; "
                "only failed events and dead letters can be replayed.",
            )
        if event.body_purged_at is not None:
            return ReplayResult(
                ReplayOutcome.PURGED,
                f"Not replayed: its body was purged on {event.body_purged_at:%Y-%m-%d} (retention policy).",
            )
        if previous == WebhookEvent.Status.FAILED:
            result, details = _failed_event_requeue(event)
        else:
            result, details = _dead_letter_reparse(event)
        audit_record(
            action="webhook.replayed",
            actor_type=AuditLog.ActorType.STAFF,
            actor=getattr(actor, "username", "") or "",
            school_id=event.account.school_id,
            target=event,
            details={"previous_status": previous, "outcome": result.outcome.value, **details},
        )
        if result.outcome in (ReplayOutcome.REQUEUED, ReplayOutcome.REVIVED):
            EVENT_PUBLISHER.add_on_commit((event.pk, current_request_id()))
    return result


def _failed_event_requeue(event: WebhookEvent) -> tuple[ReplayResult, dict]:
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=WebhookEvent.Status.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        claimed_at=None,
        processed_at=None,
        last_error="",
    )
    detail = "Queued for processing again."
    if event.applied_at is not None:
        detail += " Its payment change was applied before and will not be applied again."
    return ReplayResult(ReplayOutcome.REQUEUED, detail), {
        "previous_error": event.last_error[:500],
        "previous_attempts": event.attempts,
    }


def _dead_letter_reparse(event: WebhookEvent) -> tuple[ReplayResult, dict]:
    adapter = get_provider(event.account.provider)
    details = {"previous_errors": event.errors[:20], "previous_attempts": event.attempts}
    try:
        normalized = adapter.parse_body(body=event.raw_body.encode("utf-8"), headers=event.headers, account=event.account)
    except (PayloadMalformed, PayloadInvalid) as exc:
        errors = dead_letter_errors(exc)
        WebhookEvent.objects.filter(pk=event.pk).update(
            errors=errors, last_error=exc.detail, event_type=getattr(exc, "event_type", "") or event.event_type
        )
        listed = "; ".join(f"{error['field']}: {error['message']}" for error in errors[:5])
        return ReplayResult(ReplayOutcome.STILL_INVALID, f"Still invalid: {listed}"), {**details, "errors": errors[:20]}
    try:
        # A savepoint: the duplicate case below must not abort the replay's transaction.
        with transaction.atomic():
            WebhookEvent.objects.filter(pk=event.pk).update(
                external_event_id=normalized.event_id,
                event_type=normalized.event_type,
                status=WebhookEvent.Status.PENDING,
                errors=[],
                last_error="",
                body_sha256="",  # only dead letters carry it
                attempts=0,
                next_attempt_at=timezone.now(),
                claimed_at=None,
            )
            # Stored at last: the world hears of it as of any event received.
            outbox_row = webhook_received_outbox(
                account=event.account, event=normalized, received_at=timezone.now(), ignored=False
            )
            outbox_row.payload["webhook_event_id"] = event.pk
            outbox_row.save(force_insert=True)
    except IntegrityError:
        original = (
            WebhookEvent.objects.filter(account_id=event.account_id, external_event_id=normalized.event_id)
            .values_list("pk", flat=True)
            .first()
        )
        if original is None:
            raise
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.SUPERSEDED,
            event_type=normalized.event_type,
            errors=[],
            last_error="",
            body_sha256="",
            result=f"superseded by event #{original} ({normalized.event_id}): not applied"[:200],
        )
        return ReplayResult(
            ReplayOutcome.SUPERSEDED,
            f"Valid now, but the provider had redelivered event {normalized.event_id} and it is stored "
            f"already (#{original}): this copy is not applied.",
        ), {**details, "event_id": normalized.event_id, "superseded_by": original}
    return ReplayResult(ReplayOutcome.REVIVED, f"Valid now as event {normalized.event_id}: queued for processing."), {
        **details,
        "event_id": normalized.event_id,
    }
