"""Reads of the payments domain."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.models import Q

from payments.models import AggregatorAccount, Payment
from providers.base import NormalizedEvent


# (provider, school code) -> (expires at, account or None). The look-up is the most expensive
# step of the webhook request path, and accounts change rarely.
_account_cache: dict[tuple[str, str], tuple[float, AggregatorAccount | None]] = {}
_account_cache_lock = threading.Lock()


def account_for_webhook(*, provider: str, school_code: str) -> AggregatorAccount | None:
    """The active account of an active school with that provider, or None.

    Cached in this process for WEBHOOK_ACCOUNT_CACHE_SECONDS; saving an account or school
    clears the cache at once (see ``PaymentsConfig.ready``).
    """
    key = (provider, school_code.strip().lower())
    now = time.monotonic()
    cached = _account_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    account = (
        AggregatorAccount.objects.select_related("school")
        .filter(provider=key[0], school__code=key[1], active=True, school__active=True)
        .order_by()
        .first()
    )
    with _account_cache_lock:
        _account_cache[key] = (now + settings.WEBHOOK_ACCOUNT_CACHE_SECONDS, account)
    return account


def account_cache_clear(**_signal_kwargs) -> None:
    with _account_cache_lock:
        _account_cache.clear()


def payment_for_event_locked(*, account: AggregatorAccount, event: NormalizedEvent) -> Payment | None:
    """The payment an event is about, locked for the caller's transaction.

    A payment we started is matched by our reference or the provider's checkout id (its
    transaction id may not be known yet); any other by the provider's transaction id, unique
    per account.
    """
    match = Q(account=account, external_txn_id=event.external_txn_id) if event.external_txn_id else Q()
    if event.reference:
        match |= Q(school_id=account.school_id, reference=event.reference)
    if event.checkout_id:
        match |= Q(account=account, provider_checkout_id=event.checkout_id)
    if not match:
        return None
    # NO KEY UPDATE: rows that reference the payment (its webhook events) can still be inserted.
    return Payment.objects.select_for_update(no_key=True).filter(match).first()
