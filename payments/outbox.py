"""The outbox's one writer: every payment change and every stored webhook event becomes an
``OutboxEvent`` row in the transaction that made it, so it is published if, and only if, the
change commits. Publishing is the relay's business (``events.relay``); the schemas are
docs/events.md.

Each event type has a schema version. A change that only adds fields keeps the version; one that
renames, removes or changes the meaning of a field bumps it (consumers read ``version``).
"""

from __future__ import annotations

import uuid
from typing import Any

from payments.models import OutboxEvent, Payment

# Event type -> schema version (docs/events.md).
EVENT_VERSIONS: dict[str, int] = {
    "payment.created": 1,
    "payment.processing": 1,
    "payment.awaiting_review": 1,
    "payment.succeeded": 1,
    "payment.failed": 1,
    "payment.cancelled": 1,
    "payment.expired": 1,
    "payment.amount_changed": 1,
    "payment.refunded": 1,
    "payment.disputed": 1,
    "payment.charged_back": 1,
    "payment.mapped": 1,
    "webhook.received": 1,
    "webhook.dead_lettered": 1,
    "webhook.failed": 1,
}

# A status change that is its own event; money going back is told by the money events below.
_STATUS_EVENTS = {"processing", "awaiting_review", "succeeded", "failed", "cancelled", "expired"}


def outbox_write(*, event_type: str, school_id: int | None, key: str, payload: dict[str, Any]) -> OutboxEvent:
    """One event, inside the caller's transaction (outside one it commits alone, which is still
    what happened)."""
    event = outbox_row(event_type=event_type, school_id=school_id, key=key, payload=payload)
    event.save(force_insert=True)
    return event


def outbox_row(*, event_type: str, school_id: int | None, key: str, payload: dict[str, Any]) -> OutboxEvent:
    """One event, not saved yet: several of one change are written by one INSERT, in order."""
    return OutboxEvent(
        event_id=uuid.uuid4(),
        event_type=event_type,
        version=EVENT_VERSIONS[event_type],
        school_id=school_id,
        key=key[:255],
        payload=payload,
    )


def payment_key(payment: Payment) -> str:
    """The stream key of a payment's events: its own id, which never changes (its provider
    transaction id may be learnt later)."""
    return f"payment:{payment.pk}"


def payment_data(payment: Payment) -> dict[str, Any]:
    """The payment as every ``payment.*`` event carries it (schema: docs/events.md)."""
    return {
        "payment_id": str(payment.pk),
        "school_id": payment.school_id,
        "provider": payment.provider,
        "method": payment.method,
        "reference": payment.reference or "",
        "external_txn_id": payment.external_txn_id or "",
        "payment_request_id": str(payment.payment_request_id) if payment.payment_request_id else None,
        "status": payment.status,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "refunded_minor": payment.refunded_amount_minor,
        "charged_back_minor": payment.charged_back_amount_minor,
        "disputed_minor": payment.disputed_amount_minor,
        "net_minor": payment.net_minor,
        "student_id": payment.student_id,
        "mapping_status": payment.mapping_status,
        "settled_at": payment.settled_at.isoformat() if payment.settled_at else None,
    }


def payment_events_record(
    *, payment: Payment, created: bool, previous: dict[str, Any] | None, actor_type: str, action: str
) -> list[OutboxEvent]:
    """Write the events of one change of a payment, in one INSERT, its rows numbered in this
    order: the relay publishes them so."""
    return OutboxEvent.objects.bulk_create(
        payment_event_rows(payment=payment, created=created, previous=previous, actor_type=actor_type, action=action)
    )


def payment_event_rows(
    *, payment: Payment, created: bool, previous: dict[str, Any] | None, actor_type: str, action: str
) -> list[OutboxEvent]:
    """The events of one change of a payment (``payment_settle``), unsaved, in the order a
    consumer should see them. ``previous`` is the payment's status and money before the change
    (None when new)."""
    after = {
        "status": payment.status,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "refunded_minor": payment.refunded_amount_minor,
        "charged_back_minor": payment.charged_back_amount_minor,
        "disputed_minor": payment.disputed_amount_minor,
    }
    before = previous or {}
    types = []
    if created:
        types.append("payment.created")
    if before.get("status") != payment.status and payment.status in _STATUS_EVENTS:
        types.append(f"payment.{payment.status}")
    if before and before.get("status") == payment.status == "succeeded" and (
        before["amount_minor"], before["currency"]) != (after["amount_minor"], after["currency"]):  # fmt: skip
        types.append("payment.amount_changed")
    for field, event_type in (
        ("refunded_minor", "payment.refunded"),
        ("disputed_minor", "payment.disputed"),
        ("charged_back_minor", "payment.charged_back"),
    ):
        if before.get(field, 0) != after[field]:
            types.append(event_type)
    data = payment_data(payment)
    change = {"previous": previous, "actor_type": actor_type, "action": action}
    return [
        outbox_row(event_type=t, school_id=payment.school_id, key=payment_key(payment), payload={**data, **change})
        for t in types
    ]


def payment_mapped_row(*, payment: Payment, student_number: str, source: str) -> OutboxEvent:
    """The ``payment.mapped`` event, unsaved."""
    return outbox_row(
        event_type="payment.mapped",
        school_id=payment.school_id,
        key=payment_key(payment),
        payload={**payment_data(payment), "student_number": student_number, "source": source},
    )


def webhook_key(*, provider: str, account_id: int, txn_id: str, event_id: str) -> str:
    """The stream key of a provider event: its transaction, so one transaction's events keep
    their order on the provider's topics; the event's own id when it names none."""
    return f"{provider}:{account_id}:{txn_id or event_id}"
