"""One round of a school's sync: resolve the students' customers, read their open invoices, then
create each document on its own (looking it up first when a send is in doubt)."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.utils import timezone
from quickbooks.objects import Customer

from core.money import format_minor, from_minor
from quickbooks_sync import documents
from quickbooks_sync.errors import (
    QboUnavailable,
)
from quickbooks_sync.models import QboAdjustmentSync, QboConnection, QboCustomer, QboPaymentSync, SyncStatus
from quickbooks_sync.services.lane import _Work
from quickbooks_sync.services.outcomes import _finish_failed, _finish_synced
from quickbooks_sync.services.sends import _ADJUSTMENT_WORDS, _adjustment_type, _landed, _quote, _send_all
from quickbooks_sync.services.tokens import QboSession

logger = logging.getLogger(__name__)


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
        # 6240), so batching these creates can never make a duplicate (docs/reference/quickbooks.md §2.5, §6.5).
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


