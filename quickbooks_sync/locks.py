"""Every row lock of the QuickBooks sync, one function each.

Rows are locked ``FOR NO KEY UPDATE`` and only the named table's row (``of=("self",)``): a
joined school or payment is read, not locked. Never hold a lock across a call to Intuit: sync
records are claimed with a short lock and a lease (``claimed_until``), then sent unlocked.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from quickbooks_sync.models import QboConnection, QboPaymentSync, SyncRecord, SyncStatus

_SHAPE = {"no_key": True, "of": ("self",)}


def connection(connection_id: int, *, related: Iterable[str] = ("school",)) -> QboConnection:
    return QboConnection.objects.select_for_update(**_SHAPE).select_related(*related).get(pk=connection_id)


def connection_of_school(school_id: int) -> QboConnection:
    return QboConnection.objects.select_for_update(**_SHAPE).select_related("school").get(school_id=school_id)


def connection_of_school_or_new(school_id: int) -> tuple[QboConnection, bool]:
    """The school's connection locked, created first if it has none."""
    return QboConnection.objects.select_for_update(**_SHAPE).get_or_create(school_id=school_id)


def payment_sync(record_id: int) -> QboPaymentSync | None:
    """A payment's sync record, locked: the payment's documents are decided under it."""
    return QboPaymentSync.objects.select_for_update(**_SHAPE).filter(pk=record_id).first()


def failed_syncs(model: type[SyncRecord], record_ids: Iterable[int]) -> QuerySet:
    return model.objects.select_for_update(**_SHAPE).select_related("payment").filter(
        pk__in=list(record_ids), status=SyncStatus.FAILED
    )


def claimable(queryset: QuerySet) -> QuerySet:
    """Records no other lane holds: those locked elsewhere are skipped, not waited for."""
    return queryset.select_for_update(skip_locked=True, **_SHAPE)
