"""The safety net: staff retries, and the scan that offers every payment and refund not yet in
QuickBooks again."""

from __future__ import annotations

import logging

from quickbooks_sync import selectors
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboPaymentSync, SyncStatus
from quickbooks_sync.services.lane import _wake, qbo_school_resume
from quickbooks_sync.services.sync import _records_ensure

logger = logging.getLogger(__name__)


def qbo_backlog_scan(*, limit: int = 1000) -> list[int]:
    """Periodic (beat): give every ready payment of a syncing school its record (a payment that
    became ready on a path that did not ask), resume paused work of schools that can sync again,
    and wake every school with due work (lost messages, expired claims, scheduled retries)."""
    woken: set[int] = set()
    for connection in QboConnection.objects.select_related("school").filter(status=QboConnection.Status.CONNECTED):
        if not connection.can_sync:
            continue
        school_id = connection.school_id
        created = 0
        for payment in selectors.ready_unsynced_payments(school_id=school_id, since=connection.sync_since)[:limit]:
            _records_ensure(payment=payment, connection=connection)
            created += 1
        for payment in selectors.books_behind_ledger(school_id=school_id)[:limit]:
            _records_ensure(payment=payment, connection=connection)
            created += 1
        if (
            QboPaymentSync.objects.filter(school_id=school_id, status=SyncStatus.PAUSED).exists()
            or QboAdjustmentSync.objects.filter(school_id=school_id, status=SyncStatus.PAUSED).exists()
        ):
            qbo_school_resume(school_id=school_id)
            woken.add(school_id)
        if created:
            logger.info("backlog scan: %d payments of school %s had no sync record", created, connection.school.code)
            woken.add(school_id)
    syncing = set(
        QboConnection.objects.filter(status=QboConnection.Status.CONNECTED)
        .exclude(item_id="")
        .exclude(deposit_account_id="")
        .exclude(home_currency="")
        .values_list("school_id", flat=True)
    )
    woken |= selectors.schools_with_due_work() & syncing
    for school_id in sorted(woken):
        _wake(school_id, force=True)
    return sorted(woken)
