"""Writes of the QuickBooks sync: the entry point, the per-school sync, tokens, the connection.

How a payment reaches QuickBooks exactly once:

1. ``qbo_sync_request`` (called when a payment may have become ready: after webhook processing,
   by staff actions, by the backlog scan) makes sure a ready payment has its ``QboPaymentSync``
   record (and a ``QboAdjustmentSync`` per later money movement: refunds, chargebacks), then
   wakes its school's sync after commit.
2. ``qbo_school_sync`` runs one *lane* per school (a Redis lock): it claims due records in
   rounds, resolves the students' customers (cached in ``QboCustomer``, else found by name or
   batch-created: customer names are unique in QuickBooks, so a batch can never duplicate one),
   reads the open invoices of a whole round in one query, then creates each document on its own
   with a deterministic ``requestid``. One lane per company keeps invoice balances consistent
   between rounds and fits Intuit's advice (reference §4.1).
3. Before a create is sent its record is marked ``in_doubt`` with the exact body; after the
   answer it is ``synced`` with QuickBooks' id. A record found in doubt (a timeout, a dropped
   answer, a crash) is looked up in QuickBooks (by customer and date, recognised by the marker
   in its PrivateNote) before anything is sent again, and a resend repeats the same body under
   the same ``requestid``, which QuickBooks de-duplicates as a second guard.

No database lock is held across a network call: records are claimed with a short
``SELECT ... FOR UPDATE SKIP LOCKED`` and written back in short transactions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import redis
import requests
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from quickbooks import exceptions as qb_exceptions
from quickbooks.batch import batch_create
from quickbooks.objects import Customer

from config.celery import backoff_seconds, publish, tasks_run_inline
from core.money import format_minor, from_minor
from core.status import PaymentStatus
from payments import selectors as payment_selectors
from payments.audit import audit_record
from payments.models import AuditLog, Payment
from quickbooks_sync import documents, locks, selectors
from quickbooks_sync.client import QboClient, auth_client_build, body_json, fault_from, oauth_error, qbo_client_build
from quickbooks_sync.coordination import Lock, coordinator
from quickbooks_sync.errors import (
    QboAuthError,
    QboAuthLost,
    QboDuplicateRequest,
    QboError,
    QboFault,
    QboNotConfigured,
    QboThrottled,
    QboUnavailable,
)
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboCustomer, QboPaymentSync, SyncRecord, SyncStatus

logger = logging.getLogger(__name__)

ACTOR = "quickbooks"
SCHOOL_SYNC_TASK = "quickbooks_sync.tasks.qbo_school_sync"
Conn = QboConnection


# --- The entry point ------------------------------------------------------------------------------


def qbo_sync_request(*, payment_id: uuid.UUID, requested_by: str = "") -> str | None:
    """Make sure a ready payment (and each refund of it) will reach QuickBooks, and wake the
    school's sync after commit. Idempotent and cheap (one query) when the school has no
    QuickBooks connection. ``requested_by`` (a staff user's name, for staff actions) also syncs
    a payment older than the connection's ``sync_since`` and retries a failed sync. Returns the
    payment's sync status, or None if there is nothing to sync."""
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


def _pause_reason(connection: QboConnection) -> str:
    if connection.status == Conn.Status.NEEDS_RECONNECT:
        return f"QuickBooks authorization lost ({connection.status_reason or 'expired'}): reconnect to resume."
    if connection.status == Conn.Status.DISCONNECTED:
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


# --- The per-school lane ------------------------------------------------------------------------------


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


@dataclass
class _Work:
    record: SyncRecord
    payment: Payment


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


# --- One round ---------------------------------------------------------------------------------------


def _batch_sync(*, session: QboSession, batch: list[_Work]) -> None:
    connection = session.connection
    work: list[_Work] = []
    for item in batch:
        problem = _precondition(item, connection)
        if problem:
            _finish_failed(item.record, item.payment, error=problem, refused=False)
        else:
            work.append(item)
    # In doubt: did the last attempt land? Then it is done, whatever happens next.
    for item in [item for item in work if item.record.in_doubt]:
        found = _landed(session, item)
        if found is not None:
            _finish_synced(session, item, found, via="lookup")
            work.remove(item)
    to_plan = [item for item in work if item.record.request_body is None]
    if to_plan:
        _plan(session=session, items=to_plan)
    try:
        _send_all(session, [item for item in work if item.record.request_body is not None])
    except QboUnavailable as exc:
        exc.during_send = True
        raise
    finally:
        if any(item.record.status == SyncStatus.SYNCED for item in batch):
            QboConnection.objects.filter(pk=connection.pk).update(last_synced_at=timezone.now())


# Errors that stop a whole round: the company is throttled, the token refused, QuickBooks down.
_ROUND_STOPPERS = (QboThrottled, QboAuthError, QboAuthLost, QboUnavailable, QboNotConfigured)


def _send_all(session: QboSession, items: list[_Work]) -> None:
    """Send the round's documents, up to ``QBO_SYNC_CONCURRENCY`` at once: QuickBooks answers
    in hundreds of milliseconds, so one request at a time would stay far below the company's
    limit. Every plan was made up front (invoice balances included), so the order of the
    creates does not matter. The first error that concerns the whole company stops the rest,
    which stay claimed for ``_release``."""
    concurrency = min(settings.QBO_SYNC_CONCURRENCY, len(items))
    if concurrency <= 1:
        for item in items:
            _send(session, item)
        return
    pending = list(reversed(items))
    lock = threading.Lock()
    stopped: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    if stopped or not pending:
                        return
                    item = pending.pop()
                try:
                    _send(session, item)
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


def _precondition(item: _Work, connection: QboConnection) -> str:
    """Why this record cannot be sent at all (a permanent problem shown to staff), or ''."""
    record, payment = item.record, item.payment
    if record.realm_id and record.realm_id != connection.realm_id:
        if record.in_doubt:
            return (
                f"It was sent to QuickBooks company {record.realm_id}, which is no longer the connected company, "
                "without an answer: check that company before retrying."
            )
        record.realm_id, record.request_body = "", None  # never sent there: start afresh
    if payment.student_id is None:
        return "The payment is not mapped to a student."
    if record.amount_minor <= 0:
        return "Nothing to post: the amount is zero."
    if record.currency != connection.home_currency and not connection.multicurrency:
        return (
            f"The payment is in {record.currency} but the QuickBooks company's home currency is "
            f"{connection.home_currency} and multicurrency is off."
        )
    if isinstance(record, QboAdjustmentSync):
        parent = payment.qbo_sync
        if parent.realm_id != connection.realm_id:
            return f"The payment was synced to QuickBooks company {parent.realm_id}, not the connected one."
    return ""


def _plan(*, session: QboSession, items: list[_Work]) -> None:
    """Decide each record's document: customers first (batched), then one invoice query for
    every payment of the round."""
    connection = session.connection
    students = {
        item.payment.student_id: item.payment.student for item in items if isinstance(item.record, QboPaymentSync)
    }
    customers, customer_errors = _customers_resolve(session=session, students=list(students.values()))
    payment_customers = {customers[s] for s in students if s in customers}
    invoices = _open_invoices(session=session, customer_ids=sorted(payment_customers)) if payment_customers else {}
    multicurrency = connection.multicurrency
    for item in items:
        record, payment = item.record, item.payment
        amount = from_minor(record.amount_minor, record.currency)
        currency = record.currency if multicurrency else None
        reference = payment.external_txn_id or payment.reference or str(payment.pk)
        student = payment.student
        who = f"{student.full_name} ({student.student_number})".strip() if student.full_name else student.student_number
        if isinstance(record, QboPaymentSync):
            customer_id = customers.get(payment.student_id)
            if customer_id is None:
                _finish_failed(
                    record,
                    payment,
                    error=customer_errors.get(payment.student_id, "No QuickBooks customer."),
                    refused=False,
                )
                continue
            note = (
                f"{payment.provider} {reference}: {format_minor(record.amount_minor, record.currency)} for {who} "
                + documents.marker_for(kind="payment", payment_id=payment.pk)
            )
            open_invoices = [
                inv for inv in invoices.get(customer_id, []) if inv.currency == record.currency and inv.balance > 0
            ]
            allocations = documents.allocate(amount, open_invoices)
            if allocations:
                body = documents.payment_document(
                    customer_id=customer_id, amount=amount, txn_date=record.txn_date, allocations=allocations,
                    payment_ref=reference, note=note, deposit_account_id=connection.deposit_account_id, currency=currency,
                )  # fmt: skip
                record.txn_type = "Payment"
                applied = sum((value for _, value in allocations), Decimal(0))
                record.details = {
                    "applied": [
                        {"invoice_id": inv.invoice_id, "doc_number": inv.doc_number, "amount": str(value)}
                        for inv, value in allocations
                    ],
                    "unapplied": str(amount - applied),
                }
                # Later payments of this round see what this one took.
                for invoice, value in allocations:
                    invoices[customer_id] = [
                        documents.OpenInvoice(i.invoice_id, i.txn_date, i.balance - value, i.currency, i.doc_number)
                        if i.invoice_id == invoice.invoice_id
                        else i
                        for i in invoices[customer_id]
                    ]
            else:
                body = documents.receipt_document(
                    customer_id=customer_id, amount=amount, txn_date=record.txn_date, item_id=connection.item_id,
                    description=f"School fees for {who}, paid via {payment.provider} ({reference})",
                    payment_ref=reference, note=note, deposit_account_id=connection.deposit_account_id, currency=currency,
                )  # fmt: skip
                record.txn_type = "SalesReceipt"
                record.details = {"item_id": connection.item_id, "item": connection.item_name}
            record.customer_id = customer_id
        else:
            parent = payment.qbo_sync
            what = _ADJUSTMENT_WORDS[record.kind]
            note = (
                f"{what} of {payment.provider} {reference} ({parent.txn_type} {parent.txn_id}, {record.movement}): "
                f"{format_minor(record.amount_minor, record.currency)} for {who} "
                + documents.marker_for(kind="adjustment", payment_id=payment.pk, step=record.step)
            )
            body = documents.receipt_document(
                customer_id=parent.customer_id, amount=amount, txn_date=record.txn_date, item_id=connection.item_id,
                description=f"{what} of school fees for {who} ({reference})",
                payment_ref=reference, note=note, deposit_account_id=connection.deposit_account_id, currency=currency,
            )  # fmt: skip
            record.txn_type = _adjustment_type(record)
            record.details = {"adjusts": f"{parent.txn_type} {parent.txn_id}", "movement": record.movement}
        record.request_body = body


# What an adjustment is called in its document.
_ADJUSTMENT_WORDS = {"refund": "Refund", "chargeback": "Chargeback (dispute lost)", "correction": "Correction"}


def _adjustment_type(record: QboAdjustmentSync) -> str:
    """Money out is a RefundReceipt (reference §2.8); money in again a SalesReceipt (§2.7)."""
    return "RefundReceipt" if record.direction == QboAdjustmentSync.Direction.OUT else "SalesReceipt"


def _customers_resolve(*, session: QboSession, students: list) -> tuple[dict[int, str], dict[int, str]]:
    """QuickBooks customer ids of these students: known ones from ``QboCustomer``; the rest
    found by display name in one query, and the still-missing ones created in one batch call.
    Returns (student id -> customer id, student id -> why none)."""
    connection = session.connection
    realm = connection.realm_id
    known = dict(
        QboCustomer.objects.filter(realm_id=realm, student__in=[s.pk for s in students]).values_list(
            "student_id", "customer_id"
        )
    )
    missing = {
        documents.customer_display_name(full_name=s.full_name, student_number=s.student_number): s
        for s in students
        if s.pk not in known
    }
    errors: dict[int, str] = {}
    if not missing:
        return known, errors
    found = _customers_by_name(session, list(missing))
    to_create = [name for name in missing if name.lower() not in found]
    if to_create:
        # Customer names are unique in QuickBooks (a second create of a name is refused with
        # 6240), so batching these creates can never make a duplicate (reference §2.5, §6.5).
        objects = []
        for name in to_create:
            customer = Customer()
            customer.DisplayName = name
            customer.Notes = f"Student {missing[name].student_number} (school-payments)"
            objects.append(customer)
        result = session.batch_create(objects)
        for created in result.successes:
            found[created.DisplayName.lower()] = str(created.Id)
        refused_names = []
        for fault in result.faults:
            name = fault.original_object.DisplayName
            error = fault.Error[0] if fault.Error else None
            if error is not None and str(error.code) == "6240":
                refused_names.append(name)  # created meanwhile (or inactive): look it up
            else:
                errors[missing[name].pk] = (
                    f"QuickBooks refused customer {name!r}: {error.Message}: {error.Detail} (QuickBooks error {error.code})"
                    if error is not None
                    else f"QuickBooks refused customer {name!r}"
                )
        if refused_names:
            found.update(_customers_by_name(session, refused_names, include_inactive=True))
    new_links = []
    for name, student in missing.items():
        customer_id = found.get(name.lower())
        if customer_id is None:
            errors.setdefault(student.pk, f"No QuickBooks customer {name!r} could be found or created.")
            continue
        known[student.pk] = customer_id
        new_links.append(
            QboCustomer(
                school_id=connection.school_id,
                realm_id=realm,
                student=student,
                customer_id=customer_id,
                display_name=name,
            )
        )
    QboCustomer.objects.bulk_create(new_links, ignore_conflicts=True)
    return known, errors


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _customers_by_name(session: QboSession, names: list[str], *, include_inactive: bool = False) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(names), 50):
        chunk = names[start : start + 50]
        where = f"DisplayName IN ({', '.join(_quote(n) for n in chunk)})"
        if include_inactive:
            where += " AND Active IN (true, false)"
        rows = session.query(f"SELECT * FROM Customer WHERE {where} MAXRESULTS 1000").get("Customer", [])
        for row in rows:
            if row.get("Active", True):
                found[str(row["DisplayName"]).lower()] = str(row["Id"])
    return found


def _open_invoices(*, session: QboSession, customer_ids: list[str]) -> dict[str, list[documents.OpenInvoice]]:
    """Every open invoice of these customers, in as few queries as the page size allows."""
    invoices: dict[str, list[documents.OpenInvoice]] = {}
    ids = ", ".join(_quote(cid) for cid in customer_ids)
    start = 1
    while True:
        rows = session.query(
            f"SELECT * FROM Invoice WHERE CustomerRef IN ({ids}) AND Balance > '0' STARTPOSITION {start} MAXRESULTS 1000"
        ).get("Invoice", [])
        for row in rows:
            invoices.setdefault(str(row["CustomerRef"]["value"]), []).append(
                documents.OpenInvoice(
                    invoice_id=str(row["Id"]),
                    txn_date=str(row.get("TxnDate", "")),
                    balance=Decimal(str(row.get("Balance", 0))),
                    currency=str((row.get("CurrencyRef") or {}).get("value") or session.connection.home_currency),
                    doc_number=str(row.get("DocNumber", "")),
                )
            )
        if len(rows) < 1000:
            return invoices
        start += 1000


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
    connection = session.connection
    if session.lane is not None:
        session.lane.renew()
    session.client()  # a token refresh that fails does so before anything is marked
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


# --- Finishing a record -----------------------------------------------------------------------------


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


# --- Talking to QuickBooks ----------------------------------------------------------------------------

_clients = threading.local()


class QboSession:
    """One connection's client for the length of a run: refreshes the access token before it
    expires and maps the library's faults onto ``quickbooks_sync.errors``."""

    def __init__(self, connection: QboConnection, lane: Lock | None = None) -> None:
        self.connection = connection
        self.lane = lane

    def client(self) -> QboClient:
        if _expiring(self.connection):
            self.connection = qbo_tokens_refresh(connection_id=self.connection.pk)
        key = (
            self.connection.pk,
            self.connection.access_token,
            settings.QBO_API_BASE_URL,
            settings.QBO_OAUTH_DISCOVERY_URL,
        )
        cache = getattr(_clients, "by_connection", None)
        if cache is None or cache[0] != key:
            # A client per token version and thread: the discovery document is read once.
            cache = (
                key,
                qbo_client_build(
                    realm_id=self.connection.realm_id,
                    access_token=self.connection.access_token,
                    refresh_token=self.connection.refresh_token,
                ),
            )
            _clients.by_connection = cache
        return cache[1]

    def refresh_after_401(self) -> None:
        self.connection = qbo_tokens_refresh(
            connection_id=self.connection.pk, stale_version=self.connection.token_version
        )

    def _call(self, operation):
        client = self.client()
        try:
            return operation(client)
        except qb_exceptions.QuickbooksException as exc:
            error = fault_from(exc, intuit_tid=client.last_intuit_tid)
            if isinstance(error, QboThrottled):
                # A throttle fault that did not come as HTTP 429 (reference §4.2): pause all the same.
                coordinator().pause(self.connection.realm_id, error.retry_after)
            raise error from exc

    def query(self, select: str) -> dict[str, Any]:
        return self._call(lambda qb: qb.query(select)).get("QueryResponse", {})

    def create(self, entity: str, body: dict, request_id: str) -> dict:
        return self._call(lambda qb: qb.create_object(entity, body_json(body), request_id=request_id))[entity]

    def read(self, entity: str, object_id: str) -> dict:
        return self._call(lambda qb: qb.get_single_object(entity, object_id))[entity]

    def batch_create(self, objects: list):
        return self._call(lambda qb: batch_create(objects, qb=qb))


def _expiring(connection: QboConnection) -> bool:
    margin = timedelta(seconds=settings.QBO_TOKEN_REFRESH_MARGIN_SECONDS)
    expires = connection.access_token_expires_at
    return not connection.access_token or expires is None or expires <= timezone.now() + margin


def qbo_tokens_refresh(*, connection_id: int, stale_version: int | None = None) -> QboConnection:
    """Refresh the connection's tokens if they expire soon (or, with ``stale_version``, if the
    stored tokens are still that version, e.g. after a 401), and persist the rotated refresh
    token.

    Reference §1.5: every refresh may return a new refresh token and only the newest keeps
    working. Refreshes of one connection are serialized by a Redis lock (never a database lock
    across the network call); the result is stored under the row lock only if nobody stored
    newer tokens meanwhile (``token_version``), so the newest refresh token is never lost.
    Raises ``QboAuthLost`` when Intuit refuses the refresh token, ``QboUnavailable`` when it
    cannot be asked now."""
    timeout = settings.QBO_CONNECT_TIMEOUT_SECONDS + settings.QBO_READ_TIMEOUT_SECONDS
    lock = coordinator().lock(f"refresh:{connection_id}", ttl=3 * timeout + 10, wait=3 * timeout + 10)
    if lock is None:
        raise QboUnavailable("another worker is still refreshing this connection's tokens", outcome_unknown=False)
    try:
        connection = QboConnection.objects.select_related("school").get(pk=connection_id)
        if connection.status != Conn.Status.CONNECTED or not connection.refresh_token:
            raise QboAuthLost(_pause_reason(connection))
        if stale_version is None and not _expiring(connection):
            return connection  # fresh enough (perhaps refreshed by whoever held the lock)
        if stale_version is not None and connection.token_version != stale_version:
            return connection  # someone else already replaced the tokens we were refused with
        used_version, used_token = connection.token_version, connection.refresh_token
        auth = auth_client_build(refresh_token=used_token, realm_id=connection.realm_id)
        try:
            auth.refresh(refresh_token=used_token)
        except AuthClientError as exc:
            if exc.status_code in (400, 401):
                current = QboConnection.objects.select_related("school").get(pk=connection_id)
                if current.token_version != used_version:
                    return current  # our token was replaced while we asked (a lock that expired)
                error = oauth_error(exc)
                logger.warning("Intuit refused the refresh token of school %s: %s", connection.school.code, error)
                qbo_connection_authorization_lost(
                    connection_id=connection_id,
                    reason=f"Intuit refused the refresh token ({error})",
                    token_version=used_version,
                )
                raise QboAuthLost(f"Intuit refused the refresh token ({error})") from exc
            raise QboUnavailable(
                f"Intuit's token endpoint answered HTTP {exc.status_code}", outcome_unknown=False
            ) from exc
        except requests.RequestException as exc:
            raise QboUnavailable(
                f"Intuit's token endpoint could not be reached ({type(exc).__name__})", outcome_unknown=False
            ) from exc
        return _tokens_store(connection_id=connection_id, expected_version=used_version, auth=auth)
    finally:
        lock.release()


def _tokens_store(*, connection_id: int, expected_version: int, auth) -> QboConnection:
    now = timezone.now()
    with transaction.atomic():
        connection = locks.connection(connection_id)
        if connection.token_version != expected_version:
            logger.warning(
                "school %s: newer tokens were stored meanwhile; this refresh's are dropped", connection.school.code
            )
            return connection
        connection.access_token = auth.access_token
        connection.refresh_token = auth.refresh_token
        connection.access_token_expires_at = now + timedelta(seconds=int(auth.expires_in or 3600))
        if getattr(auth, "x_refresh_token_expires_in", None):
            connection.refresh_token_expires_at = now + timedelta(seconds=int(auth.x_refresh_token_expires_in))
        connection.token_version += 1
        connection.tokens_refreshed_at = now
        connection.save(
            update_fields=[
                "access_token", "refresh_token", "access_token_expires_at", "refresh_token_expires_at",
                "token_version", "tokens_refreshed_at", "updated_at",
            ]
        )  # fmt: skip
    return connection


def qbo_connection_authorization_lost(*, connection_id: int, reason: str, token_version: int | None = None) -> None:
    """The authorization is gone: the school's sync pauses (no retries burned) and staff see a
    reconnect banner. Ignored if newer tokens were stored since ``token_version``."""
    with transaction.atomic():
        connection = locks.connection(connection_id)
        if token_version is not None and connection.token_version != token_version:
            return
        if connection.status != Conn.Status.CONNECTED:
            return
        connection.status = Conn.Status.NEEDS_RECONNECT
        connection.status_reason = reason[:500]
        connection.save(update_fields=["status", "status_reason", "updated_at"])
        audit_record(
            action="qbo.authorization_lost",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=ACTOR,
            school_id=connection.school_id,
            target=connection,
            details={"reason": reason[:500], "realm_id": connection.realm_id},
        )
        _school_pause(school_id=connection.school_id, reason=_pause_reason(connection))


def qbo_tokens_keepalive() -> int:
    """Hourly: refresh tokens not refreshed for a day, so an idle school's refresh token keeps
    rolling (it expires after 100 days unused, reference §1.5)."""
    refreshed = 0
    stale = timezone.now() - timedelta(days=1)
    for connection in QboConnection.objects.filter(status=Conn.Status.CONNECTED):
        if connection.tokens_refreshed_at and connection.tokens_refreshed_at > stale:
            continue
        try:
            qbo_tokens_refresh(connection_id=connection.pk, stale_version=connection.token_version)
            refreshed += 1
        except QboError as exc:
            logger.warning("token keep-alive for school %s: %s", connection.school_id, exc)
    return refreshed


# --- Connecting, configuring, disconnecting (staff) --------------------------------------------------


def qbo_authorization_url(*, state: str) -> str:
    """Where to send staff to grant access (reference §1.3); ``state`` is checked on return."""
    return auth_client_build().get_authorization_url([Scopes.ACCOUNTING], state_token=state)


def qbo_connection_authorize(*, school_id: int, code: str, realm_id: str, actor: str) -> QboConnection:
    """Exchange the callback's code for tokens and store them (encrypted) with the company id.
    A reconnect resumes the paused backlog."""
    auth = auth_client_build(realm_id=realm_id)
    try:
        auth.get_bearer_token(code, realm_id=realm_id)
    except AuthClientError as exc:
        raise QboFault(f"Intuit refused the authorization ({oauth_error(exc)}); please connect again") from exc
    except requests.RequestException as exc:
        raise QboUnavailable(
            f"Intuit could not be reached ({type(exc).__name__}); please connect again", outcome_unknown=False
        ) from exc
    now = timezone.now()
    with transaction.atomic():
        connection, created = locks.connection_of_school_or_new(school_id)
        previous_realm = connection.realm_id
        realm_changed = bool(previous_realm) and previous_realm != realm_id
        connection.realm_id = realm_id
        connection.access_token = auth.access_token
        connection.refresh_token = auth.refresh_token
        connection.access_token_expires_at = now + timedelta(seconds=int(auth.expires_in or 3600))
        connection.refresh_token_expires_at = (
            now + timedelta(seconds=int(auth.x_refresh_token_expires_in)) if auth.x_refresh_token_expires_in else None
        )
        connection.token_version += 1
        connection.tokens_refreshed_at = now
        connection.status = Conn.Status.CONNECTED
        connection.status_reason = ""
        connection.connected_at = now
        connection.connected_by = actor[:150]
        if created or not previous_realm:
            connection.sync_since = now
        if realm_changed:
            # The item and account belong to the old company.
            connection.item_id = connection.item_name = connection.deposit_account_id = (
                connection.deposit_account_name
            ) = ""
            connection.home_currency, connection.company_name = "", ""
        connection.save()
        audit_record(
            action="qbo.connected",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={"realm_id": realm_id, "reconnect": bool(previous_realm), "previous_realm_id": previous_realm},
        )
    try:
        connection = qbo_company_refresh(connection_id=connection.pk)
    except QboError as exc:
        logger.warning("could not read the company settings of school %s: %s", school_id, exc)
    qbo_school_resume(school_id=school_id)
    return connection


def qbo_company_refresh(*, connection_id: int) -> QboConnection:
    """Read the company's name and currency settings (shown to staff; the currency check)."""
    session = QboSession(QboConnection.objects.select_related("school").get(pk=connection_id))
    preferences = session._call(lambda qb: qb.get(f"{qb.api_url}/company/{qb.company_id}/preferences"))["Preferences"]
    info = session.read("CompanyInfo", session.connection.realm_id)
    currency_prefs = preferences.get("CurrencyPrefs") or {}
    QboConnection.objects.filter(pk=connection_id).update(
        home_currency=str((currency_prefs.get("HomeCurrency") or {}).get("value", ""))[:3],
        multicurrency=bool(currency_prefs.get("MultiCurrencyEnabled", False)),
        company_name=str(info.get("CompanyName", ""))[:200],
        updated_at=timezone.now(),
    )
    return QboConnection.objects.select_related("school").get(pk=connection_id)


@dataclass(frozen=True)
class SetupChoices:
    items: list[tuple[str, str]]
    accounts: list[tuple[str, str]]


def qbo_setup_choices(*, school_id: int) -> SetupChoices:
    """The company's sales items and the accounts a payment can be deposited to."""
    session = QboSession(QboConnection.objects.select_related("school").get(school_id=school_id))
    items = session.query("SELECT * FROM Item MAXRESULTS 1000").get("Item", [])
    accounts = session.query(
        "SELECT * FROM Account WHERE AccountType IN ('Bank', 'Other Current Asset') MAXRESULTS 1000"
    ).get("Account", [])
    return SetupChoices(
        items=[
            (str(i["Id"]), str(i.get("Name", "")))
            for i in items
            if i.get("Type", "Service") in ("Service", "NonInventory", "Inventory")
        ],
        accounts=[(str(a["Id"]), f"{a.get('Name', '')} ({a.get('AccountType', '')})") for a in accounts],
    )


def qbo_connection_configure(*, school_id: int, item_id: str, deposit_account_id: str, actor: str) -> QboConnection:
    """Store the sales item and deposit account staff chose (checked against the company) and
    start syncing what waited for them."""
    choices = qbo_setup_choices(school_id=school_id)
    items, accounts = dict(choices.items), dict(choices.accounts)
    if item_id not in items or deposit_account_id not in accounts:
        raise QboFault("That item or account no longer exists in QuickBooks; choose again.")
    connection = QboConnection.objects.get(school_id=school_id)
    qbo_company_refresh(connection_id=connection.pk)
    with transaction.atomic():
        connection = locks.connection_of_school(school_id)
        connection.item_id, connection.item_name = item_id, items[item_id]
        connection.deposit_account_id, connection.deposit_account_name = (
            deposit_account_id,
            accounts[deposit_account_id],
        )
        connection.save(
            update_fields=["item_id", "item_name", "deposit_account_id", "deposit_account_name", "updated_at"]
        )
        audit_record(
            action="qbo.configured",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={
                "item_id": item_id,
                "deposit_account_id": deposit_account_id,
                "home_currency": connection.home_currency,
            },
        )
    qbo_school_resume(school_id=school_id)
    return connection


def qbo_connection_disconnect(*, school_id: int, actor: str) -> str:
    """Revoke the tokens at Intuit and forget them; the school's sync pauses. Returns a warning
    for staff if Intuit could not confirm the revocation."""
    connection = QboConnection.objects.select_related("school").get(school_id=school_id)
    warning = ""
    token = connection.refresh_token or connection.access_token
    if token:
        try:
            auth_client_build().revoke(token=token)
        except AuthClientError as exc:
            warning = (
                f"Intuit answered {oauth_error(exc)} to the revocation (the tokens were probably no longer valid)."
            )
        except (requests.RequestException, QboUnavailable, QboNotConfigured) as exc:
            warning = (
                f"Intuit could not be reached to revoke access ({type(exc).__name__}); to be sure, disconnect the app "
                "in QuickBooks (Settings > Apps)."
            )
    with transaction.atomic():
        connection = locks.connection(connection.pk)
        connection.access_token = connection.refresh_token = ""
        connection.access_token_expires_at = connection.refresh_token_expires_at = None
        connection.token_version += 1
        connection.status = Conn.Status.DISCONNECTED
        connection.status_reason = f"Disconnected by {actor}"
        connection.save()
        audit_record(
            action="qbo.disconnected",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={"realm_id": connection.realm_id, "warning": warning},
        )
        _school_pause(school_id=school_id, reason=_pause_reason(connection))
    return warning


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


# --- The safety net -------------------------------------------------------------------------------------


def qbo_backlog_scan(*, limit: int = 1000) -> list[int]:
    """Periodic (beat): give every ready payment of a syncing school its record (a payment that
    became ready on a path that did not ask), resume paused work of schools that can sync again,
    and wake every school with due work (lost messages, expired claims, scheduled retries)."""
    woken: set[int] = set()
    for connection in QboConnection.objects.select_related("school").filter(status=Conn.Status.CONNECTED):
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
        QboConnection.objects.filter(status=Conn.Status.CONNECTED)
        .exclude(item_id="")
        .exclude(deposit_account_id="")
        .exclude(home_currency="")
        .values_list("school_id", flat=True)
    )
    woken |= selectors.schools_with_due_work() & syncing
    for school_id in sorted(woken):
        _wake(school_id, force=True)
    return sorted(woken)
