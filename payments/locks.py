"""Locks on a payment's transaction.

Lock order, everywhere: the transaction's ids (``transaction_ids_lock``), then the payment row,
then its payment request's row. Never hold one across a network call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.db import connection


def transaction_ids_lock(*, account_id: int, ids: Iterable[tuple[str, str]]) -> None:
    """Serialize, until the current transaction ends, everyone who may create the payment of a
    transaction or leave a fact waiting for it: ``ids`` are its (kind, value) pairs, e.g.
    ("txn", provider id), ("ref", reference). Two events of one transaction share at least one
    id, so a refund that arrives before its charge cannot slip past the charge creating the
    payment (each would otherwise not see the other's uncommitted row).

    PostgreSQL transaction-level advisory locks, taken in one order so they cannot deadlock.
    SQLite (development) lets one writer in at a time anyway.
    """
    if connection.vendor != "postgresql":
        return
    keys = sorted({_lock_key(account_id, kind, value) for kind, value in ids if value})
    if not keys:
        return
    # Evaluated left to right: the locks are taken in sorted order.
    sql = "SELECT " + ", ".join("pg_advisory_xact_lock(%s)" for _ in keys)
    with connection.cursor() as cursor:
        cursor.execute(sql, keys)


def _lock_key(account_id: int, kind: str, value: str) -> int:
    digest = hashlib.blake2b(f"txn:{account_id}:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
