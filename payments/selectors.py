"""Reads of the payments domain."""

from __future__ import annotations

from django.db.models import Q

from payments.models import AggregatorAccount, Payment
from providers.base import NormalizedEvent


def account_for_webhook(*, provider: str, school_code: str) -> AggregatorAccount | None:
    """The active account of an active school with that provider, or None."""
    return (
        AggregatorAccount.objects.select_related("school")
        .filter(
            provider=provider,
            school__code=school_code.strip().lower(),
            active=True,
            school__active=True,
        )
        .first()
    )


def payment_for_event_locked(*, account: AggregatorAccount, event: NormalizedEvent) -> Payment | None:
    """The payment an event is about, locked for the caller's transaction.

    A payment we started is matched by our reference (the provider's id may not be known yet);
    any other by the provider's transaction id, unique per account.
    """
    match = Q(account=account, external_txn_id=event.external_txn_id) if event.external_txn_id else Q()
    if event.reference:
        match |= Q(school_id=account.school_id, reference=event.reference)
    if not match:
        return None
    # NO KEY UPDATE: rows that reference the payment (its webhook events) can still be inserted.
    return Payment.objects.select_for_update(no_key=True).filter(match).first()
