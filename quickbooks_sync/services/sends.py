"""Sending a round's documents to QuickBooks: in batches of up to ``QBO_SYNC_BATCH_SIZE`` (one
call for up to 30 documents, docs/reference/quickbooks.md §6.5), a single create for a document
alone; and finding what an attempt whose answer was lost created."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections

from payments.audit import audit_record
from payments.models import AuditLog
from quickbooks_sync import documents
from quickbooks_sync.client import item_fault
from quickbooks_sync.errors import (
    QboAuthError,
    QboAuthLost,
    QboDuplicateRequest,
    QboFault,
    QboNotConfigured,
    QboThrottled,
    QboUnavailable,
)
from quickbooks_sync.models import QboAdjustmentSync, QboPaymentSync
from quickbooks_sync.services.lane import ACTOR, _Work
from quickbooks_sync.services.outcomes import _finish_failed, _finish_refused_transient, _finish_synced, _retry_later
from quickbooks_sync.services.tokens import QboSession

logger = logging.getLogger(__name__)


# Errors that stop a whole round: the company is throttled, the token refused, QuickBooks down.
_ROUND_STOPPERS = (QboThrottled, QboAuthError, QboAuthLost, QboUnavailable, QboNotConfigured)


def _send_all(session: QboSession, items: list[_Work]) -> None:
    """Send the round's documents: in batches of up to ``QBO_SYNC_BATCH_SIZE`` (a company's
    single calls are capped at 500 a minute, its batch calls at 40 of up to 30 documents each,
    docs/reference/quickbooks.md §4.1), up to ``QBO_SYNC_CONCURRENCY`` calls at once: QuickBooks
    answers in hundreds of milliseconds, so one call at a time would stay far below the
    company's limit. Every plan was made up front (invoice balances included), so neither the
    order of the creates nor a batch's members seeing each other matters. The first error that
    concerns the whole company stops the rest, which stay claimed for ``_release``."""
    size = max(1, min(settings.QBO_SYNC_BATCH_SIZE, BATCH_MAX_ITEMS))
    units = [items[start : start + size] for start in range(0, len(items), size)]
    concurrency = min(settings.QBO_SYNC_CONCURRENCY, len(units))
    if concurrency <= 1:
        for unit in units:
            _send_unit(session, unit)
        return
    pending = list(reversed(units))
    lock = threading.Lock()
    stopped: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    if stopped or not pending:
                        return
                    unit = pending.pop()
                try:
                    _send_unit(session, unit)
                except _ROUND_STOPPERS as exc:
                    with lock:
                        stopped.append(exc)
                except BaseException as exc:  # noqa: BLE001 - a bug: stop the round, re-raised below
                    with lock:
                        stopped.append(exc)
        finally:
            connections.close_all()  # this thread's own database connection

    threads = [threading.Thread(target=worker, name=f"qbo-send-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if stopped:
        # A throttle or a refused token says more about what to do next than an outage.
        stopped.sort(key=lambda exc: 0 if isinstance(exc, (QboThrottled, QboAuthError, QboAuthLost)) else 1)
        raise stopped[0]


# Intuit's own recommended ceiling of documents in one batch call (docs/reference/quickbooks.md §4.1).
BATCH_MAX_ITEMS = 30


def _send_unit(session: QboSession, unit: list[_Work]) -> None:
    if len(unit) == 1:
        _send(session, unit[0])
    else:
        _send_batch(session, unit)


def _mark_sending(session: QboSession, item: _Work) -> bool:
    """Mark the record ``in_doubt`` with what is about to be sent, before the request leaves.
    Returns whether it was in doubt already (an earlier attempt may have landed)."""
    record, payment = item.record, item.payment
    connection = session.connection
    was_in_doubt = record.in_doubt
    adjustment = isinstance(record, QboAdjustmentSync)
    record.realm_id = connection.realm_id
    record.request_id = documents.request_id_for(
        realm_id=connection.realm_id, kind="adjustment" if adjustment else "payment", payment_id=payment.pk,
        step=record.step if adjustment else "0", revision=record.revision,
    )  # fmt: skip
    record.in_doubt = True
    record.attempts += 1
    fields = ["realm_id", "request_id", "request_body", "in_doubt", "attempts", "txn_type", "details", "updated_at"]
    if isinstance(record, QboPaymentSync):
        fields.append("customer_id")
    record.save(update_fields=fields)
    return was_in_doubt


def _send_batch(session: QboSession, unit: list[_Work]) -> None:
    """Create several documents in one batch call (docs/reference/quickbooks.md §6.5).

    Exactly once, as for a single create: every record is marked ``in_doubt`` before the call
    leaves, and a record in doubt is looked up by its own marker before anything is sent again
    (``_landed``), so a batch whose answer is lost is resolved document by document. The
    batch's ``requestid`` (36 characters, item ids of at most 10, §3) is a second guard: the same
    documents sent again in the same batch are answered from QuickBooks' memory. A fault of one
    item concerns that document only; an error of the call concerns them all."""
    if session.lane is not None:
        session.lane.renew()
    session.client()  # a token refresh that fails does so before anything is marked
    was_in_doubt = {id(item): _mark_sending(session, item) for item in unit}
    by_bid = {str(index): item for index, item in enumerate(unit)}
    body = {
        "BatchItemRequest": [
            {"bId": bid, "operation": "create", item.record.txn_type: item.record.request_body}
            for bid, item in by_bid.items()
        ]
    }
    request_id = documents.batch_request_id_for(request_ids=[item.record.request_id for item in unit])
    try:
        answers = session.batch(body, request_id)
    except (QboThrottled, QboAuthError) as exc:
        # Refused before QuickBooks did anything: nothing was created; not an attempt.
        for item in unit:
            _finish_refused_transient(
                item.record, error=str(exc), retry_in=getattr(exc, "retry_after", None), in_doubt=was_in_doubt[id(item)]
            )
        raise
    except QboUnavailable as exc:
        for item in unit:
            _retry_later(item.record, item.payment, error=str(exc), in_doubt=exc.outcome_unknown or was_in_doubt[id(item)])
        raise
    except QboDuplicateRequest:
        for item in unit:
            _resolve_by_lookup(session, item, error="QuickBooks has seen this batch before; waiting for its document")
        return
    except QboFault as fault:
        # The call itself was refused (its shape, not a document): send each document on its own.
        logger.warning("QuickBooks refused a batch of %d documents (%s); sending them one by one", len(unit), fault)
        for item in unit:
            _send(session, item)
        return
    answered = {str(answer.get("bId")): answer for answer in answers}
    for bid, item in by_bid.items():
        answer = answered.get(bid)
        entity = item.record.txn_type
        if answer is not None and isinstance(answer.get(entity), dict):
            _finish_synced(session, item, answer[entity], via="batch")
        elif answer is not None and answer.get("Fault"):
            _finish_item_fault(session, item, answer["Fault"], in_doubt=was_in_doubt[id(item)])
        else:
            _resolve_by_lookup(session, item, error="QuickBooks' batch answer did not mention this document")


def _finish_item_fault(session: QboSession, item: _Work, fault: dict, *, in_doubt: bool) -> None:
    error = item_fault(fault)
    if isinstance(error, QboDuplicateRequest):
        _resolve_by_lookup(session, item, error="QuickBooks has seen this request before; waiting for its document")
    elif isinstance(error, (QboThrottled, QboAuthError, QboUnavailable)):
        # Nothing says the document was refused for good: try again later, looking it up first.
        _retry_later(item.record, item.payment, error=str(error), in_doubt=True)
    else:
        _finish_failed(
            item.record,
            item.payment,
            error=str(error),
            code=getattr(error, "code", ""),
            intuit_tid=getattr(error, "intuit_tid", ""),
            refused=True,
            in_doubt=in_doubt,
        )


def _resolve_by_lookup(session: QboSession, item: _Work, *, error: str) -> None:
    found = _landed(session, item)
    if found is not None:
        _finish_synced(session, item, found, via="lookup")
    else:
        _retry_later(item.record, item.payment, error=error, in_doubt=True)


# What an adjustment is called in its document.
_ADJUSTMENT_WORDS = {"refund": "Refund", "chargeback": "Chargeback (dispute lost)", "correction": "Correction"}


def _adjustment_type(record: QboAdjustmentSync) -> str:
    """Money out is a RefundReceipt (docs/reference/quickbooks.md §2.8); money in again a SalesReceipt (§2.7)."""
    return "RefundReceipt" if record.direction == QboAdjustmentSync.Direction.OUT else "SalesReceipt"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _landed(session: QboSession, item: _Work) -> dict | None:
    """The document an earlier attempt created, if QuickBooks has it. Candidates are found by
    customer and date (both filterable), then recognised by our marker in PrivateNote (not
    filterable). Every type an attempt may have sent is searched, the last one first. More than
    one match means a duplicate exists already: the oldest is kept, and staff are told.
    Sets ``record.txn_type`` to the type found."""
    record, payment = item.record, item.payment
    if isinstance(record, QboAdjustmentSync):
        customer, types = payment.qbo_sync.customer_id, [_adjustment_type(record)]
        marker = documents.marker_for(kind="adjustment", payment_id=payment.pk, step=record.step)
    else:
        customer = record.customer_id
        types = sorted(("Payment", "SalesReceipt"), key=lambda entity: entity != record.txn_type)
        marker = documents.marker_for(kind="payment", payment_id=payment.pk)
    if not customer:
        return None  # never planned, so never sent
    for entity in types:
        matches, start = [], 1
        while True:
            rows = session.query(
                f"SELECT * FROM {entity} WHERE CustomerRef = {_quote(customer)} AND TxnDate = {_quote(record.txn_date.isoformat())} "
                f"STARTPOSITION {start} MAXRESULTS 1000"
            ).get(entity, [])
            matches += [row for row in rows if marker in str(row.get("PrivateNote") or "")]
            if len(rows) < 1000:
                break
            start += 1000
        if not matches:
            continue
        matches.sort(key=lambda row: int(row["Id"]) if str(row["Id"]).isdigit() else 0)
        if len(matches) > 1:
            logger.error(
                "payment %s has %d documents in QuickBooks: %s", payment.pk, len(matches), [m["Id"] for m in matches]
            )
            audit_record(
                action="qbo.duplicate_found",
                actor_type=AuditLog.ActorType.SYSTEM,
                actor=ACTOR,
                school_id=payment.school_id,
                target=payment,
                details={"txn_type": entity, "txn_ids": [m["Id"] for m in matches]},
            )
        record.txn_type = entity
        return matches[0]
    return None


def _send(session: QboSession, item: _Work) -> None:
    """Create one document. The record says ``in_doubt`` from before the request leaves until
    its answer is stored.

    Doubt is sticky: once an earlier attempt of this record may have landed, a refusal of a
    later one proves nothing about the earlier, so the record stays in doubt and the next
    attempt (or a staff retry) looks it up before sending anything."""
    record, payment = item.record, item.payment
    if session.lane is not None:
        session.lane.renew()
    session.client()  # a token refresh that fails does so before anything is marked
    was_in_doubt = _mark_sending(session, item)
    try:
        created = session.create(record.txn_type, record.request_body, record.request_id)
    except (QboThrottled, QboAuthError) as exc:
        # Refused before QuickBooks did anything: this request created nothing; not an attempt.
        _finish_refused_transient(
            record, error=str(exc), retry_in=getattr(exc, "retry_after", None), in_doubt=was_in_doubt
        )
        raise
    except QboUnavailable as exc:
        _retry_later(record, payment, error=str(exc), in_doubt=exc.outcome_unknown or was_in_doubt)
        raise
    except QboDuplicateRequest:
        found = _landed(session, item)
        if found is not None:
            _finish_synced(session, item, found, via="requestid")
        else:
            _retry_later(
                record,
                payment,
                error="QuickBooks has seen this request before; waiting for its document",
                in_doubt=True,
            )
        return
    except QboFault as fault:
        _finish_failed(
            record,
            payment,
            error=str(fault),
            code=fault.code,
            intuit_tid=fault.intuit_tid,
            refused=True,
            in_doubt=was_in_doubt,
        )
        return
    _finish_synced(session, item, created, via="create")
