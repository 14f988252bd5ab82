"""The per-school lane of the QuickBooks sync: waking a school's sync (one queued message per
school), claiming and releasing its due records, pausing and resuming it."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.celery import publish, tasks_run_inline
from payments.models import Payment
from quickbooks_sync import locks, selectors
from quickbooks_sync.coordination import coordinator
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboPaymentSync, SyncRecord, SyncStatus

logger = logging.getLogger(__name__)


ACTOR = "quickbooks"


SCHOOL_SYNC_TASK = "quickbooks_sync.tasks.qbo_school_sync"


def _pause_reason(connection: QboConnection) -> str:
    if connection.status == QboConnection.Status.NEEDS_RECONNECT:
        return f"QuickBooks authorization lost ({connection.status_reason or 'expired'}): reconnect to resume."
    if connection.status == QboConnection.Status.DISCONNECTED:
        return "QuickBooks is disconnected: connect to resume."
    return "Choose the sales item and deposit account in the QuickBooks settings to start syncing."


def _wake(school_id: int, *, force: bool = False) -> None:
    """Once the current transaction commits, make sure the school's sync runs.

    Like ``config.celery.enqueue_on_commit``, but coalesced: one queued message per school is
    enough, since a run drains everything that is due. Two thousand payments settling at once
    cost one message, not two thousand (each would otherwise make a worker try the lane, and
    queue ahead of the lane's own continuation). The mark is taken at commit time, so a record
    committed after a queued run has started still gets its own message; ``force`` (the backlog
    scan) publishes even if a mark is left by a lost message."""
    transaction.on_commit(lambda: _wake_now(school_id, force=force))


def _wake_now(school_id: int, *, force: bool) -> None:

    coord = coordinator()
    try:
        coord.flag_set(f"sync-requested:{school_id}")
        if not (coord.flag_set_new(f"wake-queued:{school_id}", ttl=settings.QBO_SYNC_CLAIM_SECONDS) or force):
            return
    except redis.RedisError:
        logger.warning("Redis unavailable: the sync of school %s is left to the backlog scan", school_id)
        return
    if not publish(SCHOOL_SYNC_TASK, (school_id,)):
        with contextlib.suppress(redis.RedisError):
            coord.flag_take(f"wake-queued:{school_id}")  # broker down: the backlog scan wakes it later


def _wake_later(school_id: int, seconds: float) -> None:

    # Inline tasks (development without a broker) would run at once, recursively: leave the
    # retry to the backlog scan instead.
    if not tasks_run_inline():
        publish(SCHOOL_SYNC_TASK, (school_id,), countdown=max(0.05, seconds))


@dataclass
class _Work:
    record: SyncRecord
    payment: Payment


def _claim(*, school_id: int, size: int) -> list[_Work]:
    """Claim up to ``size`` due records of the school: a short lock, then a lease."""
    now = timezone.now()
    until = now + timedelta(seconds=settings.QBO_SYNC_CLAIM_SECONDS)
    due = selectors.due_filter(now)
    with transaction.atomic():
        records: list[SyncRecord] = list(
            locks.claimable(QboPaymentSync.objects.all())
            .select_related("payment__student", "payment__school")
            .filter(due, school_id=school_id)
            .order_by("created_at")[:size]
        )
        if len(records) < size:
            records += list(
                locks.claimable(QboAdjustmentSync.objects.all())
                .select_related("payment__student", "payment__school", "payment__qbo_sync")
                .filter(due, school_id=school_id, payment__qbo_sync__status=SyncStatus.SYNCED)
                .order_by("created_at")[: size - len(records)]
            )
        for model in (QboPaymentSync, QboAdjustmentSync):
            ids = [record.pk for record in records if isinstance(record, model)]
            if ids:
                model.objects.filter(pk__in=ids).update(claimed_until=until)
    for record in records:
        record.claimed_until = until
    return [_Work(record, record.payment) for record in records]


def _school_pause(*, school_id: int, reason: str) -> int:
    """Pause the school's pending work (no attempt spent); ``qbo_school_resume`` undoes it."""
    paused = 0
    for model in (QboPaymentSync, QboAdjustmentSync):
        paused += model.objects.filter(school_id=school_id, status=SyncStatus.PENDING).update(
            status=SyncStatus.PAUSED, last_error=reason[:2000], claimed_until=None, updated_at=timezone.now()
        )
    return paused


def qbo_school_resume(*, school_id: int) -> int:
    """Resume paused work once the connection can sync again, and wake the lane."""
    connection = QboConnection.objects.filter(school_id=school_id).first()
    if connection is None or not connection.can_sync:
        return 0
    resumed = 0
    for model in (QboPaymentSync, QboAdjustmentSync):
        resumed += model.objects.filter(school_id=school_id, status=SyncStatus.PAUSED).update(
            status=SyncStatus.PENDING, next_attempt_at=None, last_error="", updated_at=timezone.now()
        )
    _wake(school_id)
    return resumed
