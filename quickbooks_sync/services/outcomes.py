"""What becomes of a sync record after QuickBooks answered: synced, failed, or retried later."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.celery import backoff_seconds
from core.money import from_minor
from payments.audit import audit_record
from payments.models import AuditLog, Payment
from quickbooks_sync.models import QboAdjustmentSync, SyncRecord, SyncStatus
from quickbooks_sync.services.lane import ACTOR, _Work
from quickbooks_sync.services.tokens import QboSession

logger = logging.getLogger(__name__)


def _finish_synced(session: QboSession, item: _Work, document: dict, *, via: str) -> None:
    record, payment = item.record, item.payment
    sent = from_minor(record.amount_minor, record.currency)
    recorded = Decimal(str(document.get("TotalAmt", "0")))
    now = timezone.now()
    kind = record.kind
    record.txn_id = str(document["Id"])
    record.in_doubt = False
    record.claimed_until = None
    record.next_attempt_at = None
    record.synced_at = now
    record.intuit_tid = ""
    if recorded != sent:
        # It is in QuickBooks (so it must never be sent again) but not as we sent it.
        record.status = SyncStatus.FAILED
        record.last_error = f"QuickBooks recorded {recorded} for {record.txn_type} {record.txn_id}, but {sent} was sent: correct it in QuickBooks."
    else:
        record.status = SyncStatus.SYNCED
        record.last_error = ""
    if "unapplied" in record.details and "UnappliedAmt" in document:
        record.details = {**record.details, "unapplied": str(document["UnappliedAmt"])}
    try:
        with transaction.atomic():
            record.save()
            audit_record(
                action="qbo.synced" if record.status == SyncStatus.SYNCED else "qbo.amount_mismatch",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor=ACTOR,
                school_id=payment.school_id,
                target=payment,
                details={
                    "kind": kind,
                    "txn_type": record.txn_type,
                    "txn_id": record.txn_id,
                    "realm_id": record.realm_id,
                    "amount_minor": record.amount_minor,
                    "currency": record.currency,
                    "recorded": str(recorded),
                    "request_id": record.request_id,
                    "via": via,
                    **({"movement": record.step} if isinstance(record, QboAdjustmentSync) else {}),
                    **({"applied": record.details.get("applied", [])} if record.txn_type == "Payment" else {}),
                },
            )
    except IntegrityError:
        # The unique (company, type, id) constraint: that document is some other record's.
        record.refresh_from_db()
        _finish_failed(
            record,
            payment,
            error=f"QuickBooks {record.txn_type} {document['Id']} is already recorded for another payment.",
            refused=False,
        )


def _finish_failed(
    record: SyncRecord,
    payment: Payment,
    *,
    error: str,
    refused: bool,
    code: str = "",
    intuit_tid: str = "",
    in_doubt: bool = False,
) -> None:
    """Leave the record visibly failed for staff. ``refused``: QuickBooks refused the request,
    which created nothing, so a staff retry gets a new requestid and a fresh plan (and still
    looks first if an earlier attempt is ``in_doubt``); otherwise (retries used up while in
    doubt) the retry looks the document up first and resends the same request."""
    record.status = SyncStatus.FAILED
    record.last_error = error[:2000]
    record.last_error_code = code[:16]
    record.intuit_tid = intuit_tid[:64]
    record.claimed_until = None
    record.next_attempt_at = None
    if refused:
        record.in_doubt = in_doubt
        record.revision += 1
        record.request_body = None
    with transaction.atomic():
        record.save()
        audit_record(
            action="qbo.sync_failed",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=ACTOR,
            school_id=payment.school_id,
            target=payment,
            details={
                "kind": record.kind,
                "error": error[:500],
                "code": code,
                "attempts": record.attempts,
                "intuit_tid": intuit_tid,
            },
        )


def _finish_refused_transient(record: SyncRecord, *, error: str, retry_in: float | None, in_doubt: bool) -> None:
    record.in_doubt = in_doubt
    record.revision += 1  # a replay of this requestid could repeat the refusal
    record.request_body = None
    record.attempts = max(0, record.attempts - 1)
    record.claimed_until = None
    record.next_attempt_at = timezone.now() + timedelta(seconds=retry_in) if retry_in else None
    record.last_error = error[:2000]
    record.save()


def _retry_later(record: SyncRecord, payment: Payment, *, error: str, in_doubt: bool) -> None:
    """A transient failure: retry with exponential backoff and jitter, then give up visibly."""
    record.in_doubt = in_doubt
    if record.attempts >= settings.QBO_SYNC_MAX_ATTEMPTS:
        _finish_failed(record, payment, error=f"gave up after {record.attempts} attempts: {error}", refused=False)
        return
    record.claimed_until = None
    record.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(record.attempts - 1))
    record.last_error = error[:2000]
    record.save()


def _release(batch: list[_Work], *, retry_in: float | None, error: str, spend_attempt: bool = False) -> None:
    """Give back what a run claimed but did not finish. A transient failure before anything
    was sent counts as an attempt (``spend_attempt``); throttling and authorization do not."""
    now = timezone.now()
    for work in batch:
        record = (
            type(work.record)
            .objects.filter(pk=work.record.pk, status=SyncStatus.PENDING, claimed_until__isnull=False)
            .first()
        )
        if record is None:
            continue  # finished, or paused meanwhile
        wait = retry_in
        if spend_attempt:
            record.attempts += 1
            if record.attempts >= settings.QBO_SYNC_MAX_ATTEMPTS:
                _finish_failed(
                    record, work.payment, error=f"gave up after {record.attempts} attempts: {error}", refused=False
                )
                continue
            wait = backoff_seconds(record.attempts - 1)
        record.claimed_until = None
        record.next_attempt_at = now + timedelta(seconds=wait) if wait else None
        record.last_error = error[:2000]
        record.save(update_fields=["attempts", "claimed_until", "next_attempt_at", "last_error", "updated_at"])
