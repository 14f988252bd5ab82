"""Every row lock of the payments domain, one function each (Saleor's ``lock_objects.py``).

Lock order, everywhere: a webhook event, then the transaction's ids (``transaction_ids_lock``),
then the payment row, then its payment request's or refund request's row. Never hold a lock
across a network call; keep the transaction short.

Rows are locked ``FOR NO KEY UPDATE`` (rows that reference them, such as a payment's events and
facts, can still be inserted) and only the named table's row (``of=("self",)``: a joined school
or account is read, not locked).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q, QuerySet

from payments.models import Payment, PaymentRequest, ProviderAccount, RefundRequest, WebhookEvent

_SHAPE = {"no_key": True, "of": ("self",)}


def transaction_ids_lock(*, account_id: int, ids: Iterable[tuple[str, str]]) -> None:
    """Serialize, until the current transaction ends, everyone who may create the payment of a
    transaction or leave a fact waiting for it: ``ids`` are its (kind, value) pairs, e.g.
    ("txn", provider id), ("ref", reference). Two events of one transaction share at least one
    id, so a refund that arrives before its charge cannot slip past the charge creating the
    payment (each would otherwise not see the other's uncommitted row).

    PostgreSQL transaction-level advisory locks, taken in one order so they cannot deadlock.
    SQLite (development) lets one writer in at a time anyway.
    """
    transaction_ids_lock_many((account_id, kind, value) for kind, value in ids)


def transaction_ids_lock_many(ids: Iterable[tuple[int, str, str]]) -> None:
    """``transaction_ids_lock`` for (account id, kind, value) ids of many transactions at once."""
    if connection.vendor != "postgresql":
        return
    keys = sorted({_lock_key(account_id, kind, value) for account_id, kind, value in ids if value})
    if not keys:
        return
    # Evaluated in the array's order: the locks are taken sorted.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key", [keys])


def _lock_key(account_id: int, kind: str, value: str) -> int:
    digest = hashlib.blake2b(f"txn:{account_id}:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def payment(payment_id: uuid.UUID, *, related: Iterable[str] = ("account",)) -> Payment:
    """The payment row, locked; ``related`` rows are joined to read, not locked."""
    return Payment.objects.select_for_update(**_SHAPE).select_related(*related).get(pk=payment_id)


def payment_of_transaction(*, account: ProviderAccount, ids: list[tuple[str, str]]) -> Payment | None:
    """The payment of the transaction with these (kind, value) ids *in this account*, locked for
    the caller's transaction: by the provider's transaction id, the checkout we started, or the
    merchant reference (ours, or the provider's own for a payment we did not start). Another
    account's payment is never found, even with the same reference: one provider cannot settle
    a payment made through another.

    When ids point at different payments (they should not), the transaction id wins, then the
    checkout, then the reference (``payment_pick``).
    """
    match = _transaction_match(ids)
    if not match:
        return None
    return payment_pick(list(Payment.objects.select_for_update(**_SHAPE).filter(match, account=account)[:4]), ids)


def payments_of_transactions(*, account: ProviderAccount, ids: Iterable[tuple[str, str]]) -> list[Payment]:
    """Every payment of this account named by any of these ids (of many transactions), locked;
    ``payment_matches`` and ``payment_pick`` then find each transaction's among them."""
    match = _transaction_match(list(ids))
    if not match:
        return []
    found = list(Payment.objects.select_for_update(**_SHAPE).filter(match, account=account).order_by("pk"))
    for payment in found:
        payment.account = account
    return found


def _transaction_match(ids: list[tuple[str, str]]) -> Q:
    txn_ids = {value for kind, value in ids if kind == "txn" and value}
    checkouts = {value for kind, value in ids if kind == "checkout" and value}
    references = {value for kind, value in ids if kind == "ref" and value}
    match = Q()
    if txn_ids:
        match |= Q(external_txn_id__in=txn_ids) | Q(provider_charge_id__in=txn_ids)
    if checkouts:
        match |= Q(provider_checkout_id__in=checkouts)
    if references:
        match |= Q(reference__in=references) | Q(provider_reference__in=references)
    return match


def payment_matches(payment: Payment, ids: list[tuple[str, str]]) -> bool:
    """Whether ``_transaction_match(ids)`` selects this payment: the same rule, in Python."""
    for kind, value in ids:
        if not value:
            continue
        if kind == "txn" and value in (payment.external_txn_id, payment.provider_charge_id):
            return True
        if kind == "checkout" and value == payment.provider_checkout_id:
            return True
        if kind == "ref" and value in (payment.reference, payment.provider_reference):
            return True
    return False


def payment_pick(found: list[Payment], ids: list[tuple[str, str]]) -> Payment | None:
    """The transaction's payment among those its ids found: by transaction id, then checkout,
    then reference, the oldest first."""
    if len(found) <= 1:
        return found[0] if found else None
    txn_ids = {value for kind, value in ids if kind == "txn" and value}
    checkouts = {value for kind, value in ids if kind == "checkout" and value}

    def rank(payment: Payment) -> int:
        if payment.external_txn_id in txn_ids or payment.provider_charge_id in txn_ids:
            return 0
        if payment.provider_checkout_id in checkouts:
            return 1
        return 2

    return min(found, key=lambda payment: (rank(payment), payment.created_at))


def payment_request(payment_request_id: int, *, related: Iterable[str] = ()) -> PaymentRequest:
    return PaymentRequest.objects.select_for_update(**_SHAPE).select_related(*related).get(pk=payment_request_id)


def refund_request(refund_request_id: uuid.UUID) -> RefundRequest:
    return RefundRequest.objects.select_for_update(**_SHAPE).get(pk=refund_request_id)


def provider_account(account_id: int) -> ProviderAccount:
    return ProviderAccount.objects.select_for_update(**_SHAPE).select_related("school").get(pk=account_id)


def provider_account_of(*, school_code: str, provider: str) -> ProviderAccount | None:
    return (
        ProviderAccount.objects.select_for_update(**_SHAPE)
        .select_related("school")
        .filter(school__code=school_code, provider=provider)
        .first()
    )


def webhook_event(event_id: int, *, key_change: bool = False, related: Iterable[str] = ("account",)) -> WebhookEvent:
    """The event row, locked. ``key_change``: FOR UPDATE rather than NO KEY UPDATE, for a change
    of a key column (a revived dead letter gets its provider event id)."""
    shape = {"of": ("self",)} if key_change else _SHAPE
    return WebhookEvent.objects.select_for_update(**shape).select_related(*related).get(pk=event_id)


def staff_user(username: str):
    """The user of that name, locked, or None: two commands adding the same staff member go in turn."""
    return get_user_model().objects.select_for_update(**_SHAPE).filter(username=username).first()


def skip_locked(queryset: QuerySet) -> QuerySet:
    """Claim rows no one else holds: rows locked by another worker are skipped, not waited for."""
    return queryset.select_for_update(skip_locked=True, **_SHAPE)
