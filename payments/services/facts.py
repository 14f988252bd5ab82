"""The facts of a transaction (``payments.ledger``): what an event or the provider's API states,
kept for its payment or waiting for it."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from core.money import format_minor
from core.status import PaymentStatus
from payments.ledger import FactKind, FactSource
from payments.models import (
    Payment,
    TransactionFact,
    WebhookEvent,
)
from providers.base import NormalizedEvent, NormalizedStatus

logger = logging.getLogger(__name__)

def event_ids(event: NormalizedEvent) -> list[tuple[str, str]]:
    return [
        ("txn", event.external_txn_id), ("ref", event.reference), ("checkout", event.checkout_id),
        # A charge id is in the transaction ids' namespace: a charge-only transaction has no other.
        ("txn", event.charge_id),
    ]  # fmt: skip


def fact_summary(fact: TransactionFact) -> str:
    amount = format_minor(fact.amount_minor, fact.currency) if fact.amount_minor is not None else ""
    return f"{fact.kind} {fact.status} {amount}".strip()


def facts_from_event(
    event: NormalizedEvent, *, occurred_at: datetime, webhook_event_id: int | None
) -> list[TransactionFact]:
    """The facts a verified event states. A body not bound to a secret states only that the
    transaction is under way: its money claims wait for the provider's API
    (``payment_provider_status_apply``)."""
    common = {
        "occurred_at": occurred_at,
        "source": FactSource.PROVIDER_EVENT,
        "source_ref": event.event_id[:255],
        "webhook_event_id": webhook_event_id,
    }
    if event.requires_confirmation:
        if event.status is None:
            return []
        status = PaymentStatus.PENDING if event.status == PaymentStatus.PENDING else PaymentStatus.PROCESSING
        return [TransactionFact(kind=FactKind.CHARGE, status=status, **common)]
    facts = []
    if event.status is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.CHARGE, status=event.status, amount_minor=event.amount_minor, currency=event.currency,
                **common,
            )  # fmt: skip
        )
    for refund in event.refunds:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUND, key=(refund.key or f"event:{event.event_id}")[:255], status=refund.status,
                amount_minor=refund.amount_minor, currency=event.currency, **common,
            )  # fmt: skip
        )
    if event.refunded_total_minor is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUNDED_TOTAL, amount_minor=event.refunded_total_minor, currency=event.currency,
                **common,
            )  # fmt: skip
        )
    for dispute in event.disputes:
        facts.append(
            TransactionFact(
                kind=FactKind.DISPUTE, key=dispute.key[:255], status=dispute.status,
                amount_minor=dispute.amount_minor, currency=event.currency, **common,
            )  # fmt: skip
        )
    return facts


def facts_from_status(status: NormalizedStatus, *, payment: Payment, source_ref: str) -> list[TransactionFact]:
    common = {"occurred_at": timezone.now(), "source": FactSource.PROVIDER_API, "source_ref": source_ref[:255]}
    currency = status.currency or payment.currency
    facts = [
        TransactionFact(
            kind=FactKind.CHARGE,
            status=status.status,
            amount_minor=status.amount_minor if status.amount_minor is not None else None,
            currency=currency if status.amount_minor is not None else "",
            **common,
        )
    ]
    if status.status == PaymentStatus.SUCCEEDED and status.amount_minor is None:
        facts[0].amount_minor, facts[0].currency = payment.amount_minor, payment.currency
    for refund in status.refunds:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUND, key=refund.key[:255], status=refund.status, amount_minor=refund.amount_minor,
                currency=currency, **common,
            )  # fmt: skip
        )
    if status.refunded_total_minor is not None:
        facts.append(
            TransactionFact(
                kind=FactKind.REFUNDED_TOTAL, amount_minor=status.refunded_total_minor, currency=currency, **common
            )
        )
    for dispute in status.disputes:
        facts.append(
            TransactionFact(
                kind=FactKind.DISPUTE, key=dispute.key[:255], status=dispute.status,
                amount_minor=dispute.amount_minor, currency=currency, **common,
            )  # fmt: skip
        )
    return facts


def facts_add(
    payment: Payment, facts: list[TransactionFact], *, none_before: bool = False, batch=None
) -> list[TransactionFact]:
    """Keep the new facts of a locked payment; returns those stored. A report that only repeats
    the latest one of its kind (the janitor asking again, an event stating what another said)
    adds nothing, so the ledger does not grow with every check; the fold would give the same
    answer either way. ``none_before``: the payment has no facts yet (it was created just now
    and none waited for it), so there is nothing to read. ``batch``: a ``SettlementBatch`` that
    inserts them with its other rows."""
    if not facts:
        return []
    latest: dict[tuple, tuple] = {}
    stored = [] if none_before else (
        TransactionFact.objects.filter(payment=payment)
        .order_by("occurred_at", "id")
        .values_list("kind", "key", "source", "status", "amount_minor", "currency")
    )  # fmt: skip
    for kind, key, source, status, amount, currency in stored:
        latest[(kind, key, source)] = (status, amount, currency)
    new = []
    for fact in facts:
        fact.payment, fact.school_id, fact.account_id = payment, payment.school_id, payment.account_id
        slot = (fact.kind, fact.key, fact.source)
        value = (fact.status, fact.amount_minor, fact.currency)
        if latest.get(slot) == value:
            continue
        latest[slot] = value
        new.append(fact)
    if batch is not None:
        batch.rows_add(new)
    else:
        TransactionFact.objects.bulk_create(new)
    return new


def facts_adopt(payment: Payment) -> int:
    """Attach the facts that were waiting for this payment (found by its ids in its account),
    and link their webhook events to it."""
    if payment.account_id is None:
        return 0
    match = Q()
    for txn_id in {payment.external_txn_id, payment.provider_charge_id} - {None, ""}:
        match |= Q(txn_id=txn_id)
    for reference in {payment.reference, payment.provider_reference} - {None, ""}:
        match |= Q(reference=reference)
    if not match:
        return 0
    # Usually none waits: one UPDATE finds that out.
    adopted = TransactionFact.objects.filter(match, account_id=payment.account_id, payment__isnull=True).update(
        payment=payment
    )
    if adopted:
        facts_events = TransactionFact.objects.filter(payment=payment, webhook_event__isnull=False)
        WebhookEvent.objects.filter(pk__in=facts_events.values("webhook_event_id"), payment__isnull=True).update(
            payment=payment
        )
    return adopted
