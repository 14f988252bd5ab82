"""The entry point of the QuickBooks sync (``qbo_sync_request``) and one school's sync run
(``qbo_school_sync``): claim due records in rounds until none is left, under the school's lane."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import date

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.celery import backoff_seconds
from core.status import PaymentStatus
from payments import selectors as payment_selectors
from payments.audit import audit_record
from payments.models import AuditLog, Payment
from quickbooks_sync import locks, selectors
from quickbooks_sync.coordination import Lock, coordinator
from quickbooks_sync.errors import (
    QboAuthError,
    QboAuthLost,
    QboNotConfigured,
    QboThrottled,
    QboUnavailable,
)
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboPaymentSync, SyncStatus
from quickbooks_sync.services.lane import _claim, _pause_reason, _school_pause, _wake, _wake_later
from quickbooks_sync.services.outcomes import _release
from quickbooks_sync.services.rounds import _batch_sync
from quickbooks_sync.services.tokens import QboSession, qbo_connection_authorization_lost

logger = logging.getLogger(__name__)


def qbo_sync_offered(*, payment_ids: Iterable[uuid.UUID]) -> None:
    """The books hook (``settings.PAYMENT_BOOKS_HOOKS``): payments whose money may have changed
    were committed. Most settle at schools without QuickBooks: one query for all of them keeps
    those out, before ``qbo_sync_request`` takes each of the others."""
    with_connection = Payment.objects.filter(pk__in=list(payment_ids), school__qbo_connection__isnull=False)
    for payment_id in with_connection.values_list("pk", flat=True):
        try:
            qbo_sync_request(payment_id=payment_id)
        except Exception:  # noqa: BLE001 - one payment's error must not keep the others from the books
            logger.exception("offering payment %s to QuickBooks failed; the backlog scan will find it", payment_id)


def qbo_sync_request(*, payment_id: uuid.UUID, requested_by: str = "") -> str | None:
    """Make sure a ready payment (and each refund of it) will reach QuickBooks, and wake the
    school's sync after commit. Idempotent and cheap (one query) when the school has no
    QuickBooks connection. ``requested_by`` (a staff user's name, for staff actions) also syncs
    a payment older than the connection's ``sync_since`` and retries a failed sync. Returns the
    payment's sync status, or None if there is nothing to sync."""
    # Most calls come from payments settling at schools without QuickBooks: one narrow query
    # decides that, before the payment (seventy-odd columns) is loaded.
    if not Payment.objects.filter(pk=payment_id, school__qbo_connection__isnull=False).exists():
        return None
    payment = Payment.objects.select_related("school__qbo_connection").filter(pk=payment_id).first()
    if payment is None or not selectors.payment_is_ready(payment):
        return None
    connection = getattr(payment.school, "qbo_connection", None)
    if connection is None:
        return None
    if payment.created_at < connection.sync_since and not requested_by:
        return None
    record = _records_ensure(payment=payment, connection=connection)
    if requested_by and record.status == SyncStatus.FAILED:
        qbo_sync_retry(payment_sync_ids=[record.pk], actor=requested_by)  # staff asked again
        record.refresh_from_db()
    if connection.can_sync:
        _wake(payment.school_id)
    return record.status


def _txn_date(payment: Payment) -> date:
    moment = payment.status_changed_at if payment.status == PaymentStatus.SUCCEEDED else payment.created_at
    return timezone.localdate(moment)


def _records_ensure(*, payment: Payment, connection: QboConnection) -> QboPaymentSync:
    """Make the payment's documents follow its ledger: the record of its first document (the
    money received) and one adjustment for every money movement not yet covered.

    Each movement of the ledger (``payments.ledger``: the charge, each refund, each chargeback)
    is compared with what its documents already book; a difference becomes one new adjustment
    (money out: a RefundReceipt; money in again: a SalesReceipt). So each money movement reaches
    QuickBooks once, and the sum of a payment's documents always comes back to its net."""
    initial = SyncStatus.PENDING if connection.can_sync else SyncStatus.PAUSED
    reason = "" if connection.can_sync else _pause_reason(connection)
    with transaction.atomic():
        record, _ = QboPaymentSync.objects.get_or_create(
            payment=payment,
            defaults={
                "school_id": payment.school_id,
                "status": initial,
                "txn_date": _txn_date(payment),
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "last_error": reason,
            },
        )
        # Under the payment record's lock: two changes racing cannot both book one movement.
        locks.payment_sync(record.pk)
        adjustments = list(QboAdjustmentSync.objects.filter(payment=payment))
        booked: dict[str, int] = {"charge": record.amount_minor}
        sequences: dict[str, int] = {}
        for adjustment in adjustments:
            booked[adjustment.movement] = booked.get(adjustment.movement, 0) + adjustment.signed_minor
            sequences[adjustment.movement] = max(sequences.get(adjustment.movement, -1), adjustment.sequence)
        targets = {movement.key: movement.amount_minor for movement in payment_selectors.payment_ledger(payment=payment).movements}
        new = []
        for key in sorted(set(targets) | set(booked)):
            difference = targets.get(key, 0) - booked.get(key, 0)
            if not difference:
                continue
            new.append(
                QboAdjustmentSync(
                    payment=payment,
                    school_id=payment.school_id,
                    movement=key,
                    sequence=sequences.get(key, -1) + 1,
                    direction=QboAdjustmentSync.Direction.IN if difference > 0 else QboAdjustmentSync.Direction.OUT,
                    status=initial,
                    txn_date=timezone.localdate(),
                    amount_minor=abs(difference),
                    currency=payment.currency,
                    last_error=reason,
                )
            )
        QboAdjustmentSync.objects.bulk_create(new)
    return record


def qbo_school_sync(*, school_id: int) -> str:
    """Sync the school's due records, one lane per school. A call that finds the lane taken
    leaves a flag, which the lane's holder checks before it lets go, so no request is lost.
    Returns what the run ended with: idle, busy, more, throttled, paused, unavailable."""
    coord = coordinator()
    coord.flag_take(f"wake-queued:{school_id}")  # from now on, a new request needs a new message
    requested = f"sync-requested:{school_id}"
    coord.flag_set(requested)
    outcome = "busy"
    while True:
        lane = coord.try_lock(f"lane:{school_id}", ttl=settings.QBO_SYNC_CLAIM_SECONDS)
        if lane is None:
            return outcome
        try:
            coord.flag_take(requested)
            outcome = _school_drain(school_id=school_id, lane=lane)
        finally:
            lane.release()
        if outcome == "more" or not coord.flag_take(requested):
            break
    if outcome == "more":
        _wake_later(school_id, 0)  # its own turn, so other schools' work is not held up
    else:
        due = selectors.next_due_at(school_id=school_id)
        if due is not None:
            _wake_later(school_id, (due - timezone.now()).total_seconds())
    return outcome


def _school_drain(*, school_id: int, lane: Lock) -> str:
    deadline = time.monotonic() + settings.QBO_SYNC_RUN_SECONDS
    connection = QboConnection.objects.select_related("school").filter(school_id=school_id).first()
    if connection is None:
        return "not connected"
    if not connection.can_sync:
        _school_pause(school_id=school_id, reason=_pause_reason(connection))
        return "paused"
    session = QboSession(connection, lane)
    refreshed_after_401 = False
    while time.monotonic() < deadline:
        lane.renew()
        batch = _claim(school_id=school_id, size=settings.QBO_SYNC_CHUNK_SIZE)
        if not batch:
            return "idle"
        try:
            _batch_sync(session=session, batch=batch)
        except QboThrottled as exc:
            _release(batch, retry_in=exc.retry_after, error=str(exc))
            return "throttled"
        except QboAuthError as exc:
            _release(batch, retry_in=None, error=str(exc))
            if refreshed_after_401:
                qbo_connection_authorization_lost(connection_id=connection.pk, reason=str(exc))
                return "paused"
            refreshed_after_401 = True
            try:
                session.refresh_after_401()
            except QboAuthLost:
                return "paused"
            except QboUnavailable as unavailable:
                logger.warning("token refresh failed for school %s: %s", school_id, unavailable)
                return "unavailable"
        except QboAuthLost as exc:
            _release(batch, retry_in=None, error=str(exc))
            return "paused"
        except QboNotConfigured as exc:
            _release(batch, retry_in=None, error=str(exc))
            _school_pause(school_id=school_id, reason=str(exc))
            return "paused"
        except QboUnavailable as exc:
            # A look-up failed: every record of the round was tried and counts an attempt. A
            # create failed: that record counted its own; the others were not tried, and wait
            # as long before the next try.
            during_send = getattr(exc, "during_send", False)
            _release(
                batch,
                retry_in=backoff_seconds(0) if during_send else None,
                error=str(exc),
                spend_attempt=not during_send,
            )
            return "unavailable"
    return "more"


def qbo_sync_retry(*, payment_sync_ids: Iterable[int] = (), adjustment_sync_ids: Iterable[int] = (), actor: str) -> int:
    """Staff retry failed syncs. A record QuickBooks refused gets a new requestid and a fresh
    plan; one that gave up in doubt is looked up first. A record already in QuickBooks (an
    amount mismatch) is left alone: it must be corrected there."""
    retried, schools = 0, set()
    for model, ids in ((QboPaymentSync, payment_sync_ids), (QboAdjustmentSync, adjustment_sync_ids)):
        if not ids:
            continue
        with transaction.atomic():
            for record in locks.failed_syncs(model, ids):
                if record.txn_id:
                    continue
                record.status = SyncStatus.PENDING
                record.attempts = 0
                record.next_attempt_at = None
                record.claimed_until = None
                record.save(update_fields=["status", "attempts", "next_attempt_at", "claimed_until", "updated_at"])
                audit_record(
                    action="qbo.sync_retry",
                    actor_type=AuditLog.ActorType.STAFF,
                    actor=actor,
                    school_id=record.school_id,
                    target=record.payment,
                    details={"kind": record.kind, "previous_error": record.last_error[:500]},
                )
                retried += 1
                schools.add(record.school_id)
    for school_id in schools:
        connection = QboConnection.objects.filter(school_id=school_id).first()
        if connection is not None and connection.can_sync:
            _wake(school_id)
        elif connection is not None:
            _school_pause(school_id=school_id, reason=_pause_reason(connection))
    return retried
