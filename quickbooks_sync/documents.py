"""The QuickBooks documents a payment becomes, built from our own data: pure functions, no I/O.

Wire format: docs/reference/quickbooks.md §2.6 (Payment applied to invoices), §2.7 (SalesReceipt), §2.8
(RefundReceipt). Amounts are exact ``Decimal``s from ``core.money.from_minor``, written as
JSON strings the way python-quickbooks' ``DecimalEncoder`` writes them (``use_decimal``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

# Fixed forever: request ids derived from it must be the same on every host and every retry.
REQUEST_ID_NAMESPACE = uuid.UUID("6c1b8f3e-2f55-4f0e-9a53-0d1f4b2f8e71")

# Intuit's field limits (PaymentRefNum: 21 characters; DisplayName: 500).
PAYMENT_REF_MAX = 21
DISPLAY_NAME_MAX = 500


@dataclass(frozen=True)
class OpenInvoice:
    invoice_id: str
    txn_date: str
    balance: Decimal
    currency: str
    doc_number: str = ""


def request_id_for(*, realm_id: str, kind: str, payment_id: uuid.UUID | str, step: str = "0", revision: int = 0) -> str:
    """The ``requestid`` (docs/reference/quickbooks.md §3) of one operation: the same for every retry of it, so a
    replay can never post twice; a new ``revision`` only after QuickBooks refused the last one.
    ``step`` names an adjustment among the payment's (``QboAdjustmentSync.step``)."""
    name = f"{realm_id}:{kind}:{payment_id}:{step}:{revision}"
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, name))


def batch_request_id_for(*, request_ids: list[str]) -> str:
    """The ``requestid`` of one batch call: 36 characters (the most a batch's may have,
    docs/reference/quickbooks.md §3), the same for the same documents in the same order, so a
    batch sent again is answered from QuickBooks' memory with item ids that still match."""
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, "batch:" + ",".join(request_ids)))


def marker_for(*, kind: str, payment_id: uuid.UUID | str, step: str = "") -> str:
    """Written into the document's PrivateNote: how a look-up recognises our own document
    (PrivateNote is not filterable, so candidates are found by customer and date)."""
    if kind == "payment":
        return f"[sp:{payment_id}]"
    return f"[sp:{payment_id}:{step}]"


def customer_display_name(*, full_name: str, student_number: str) -> str:
    """A deterministic, unique name: the student number makes two namesakes different. QBO
    reserves ':' for sub-customers, and names are single-line."""
    name = re.sub(r"[:\t\r\n]+", " ", (full_name or "").strip())
    name = re.sub(r"\s+", " ", name).strip()
    number = re.sub(r"[:\t\r\n]+", " ", student_number).strip()
    text = f"{name} ({number})" if name else number
    return text[:DISPLAY_NAME_MAX]


def allocate(amount: Decimal, invoices: list[OpenInvoice]) -> list[tuple[OpenInvoice, Decimal]]:
    """Apply ``amount`` to the oldest open invoices first, each up to its balance. What is left
    over stays unapplied on the payment (a credit for the customer)."""
    remaining = amount
    allocations = []
    for invoice in sorted(invoices, key=lambda inv: (inv.txn_date, _id_key(inv.invoice_id))):
        if remaining <= 0:
            break
        take = min(invoice.balance, remaining)
        if take > 0:
            allocations.append((invoice, take))
            remaining -= take
    return allocations


def _id_key(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _amount(value: Decimal) -> str:
    return format(value, "f")


def _common(
    *, customer_id: str, txn_date: date, payment_ref: str, note: str, deposit_account_id: str, currency: str | None
) -> dict:
    body: dict = {
        "CustomerRef": {"value": customer_id},
        "TxnDate": txn_date.isoformat(),
        "PrivateNote": note,
        "DepositToAccountRef": {"value": deposit_account_id},
    }
    if payment_ref:
        body["PaymentRefNum"] = payment_ref[:PAYMENT_REF_MAX]
    if currency:
        # Only with multicurrency on; otherwise the home currency is implied and was checked.
        body["CurrencyRef"] = {"value": currency}
    return body


def payment_document(
    *,
    customer_id: str,
    amount: Decimal,
    txn_date: date,
    allocations: list[tuple[OpenInvoice, Decimal]],
    payment_ref: str,
    note: str,
    deposit_account_id: str,
    currency: str | None = None,
) -> dict:
    """A Payment of ``amount`` linked to the given invoices (docs/reference/quickbooks.md §2.6); the total may
    exceed the linked lines, the rest stays unapplied."""
    body = _common(
        customer_id=customer_id, txn_date=txn_date, payment_ref=payment_ref, note=note,
        deposit_account_id=deposit_account_id, currency=currency,
    )  # fmt: skip
    body["TotalAmt"] = _amount(amount)
    body["Line"] = [
        {"Amount": _amount(applied), "LinkedTxn": [{"TxnId": invoice.invoice_id, "TxnType": "Invoice"}]}
        for invoice, applied in allocations
    ]
    return body


def receipt_document(
    *,
    customer_id: str,
    amount: Decimal,
    txn_date: date,
    item_id: str,
    description: str,
    payment_ref: str,
    note: str,
    deposit_account_id: str,
    currency: str | None = None,
) -> dict:
    """One line of the chosen sales item, quantity 1 at the amount (Amount = Qty x UnitPrice,
    else fault 6070): the body of a SalesReceipt (§2.7) and of a RefundReceipt (§2.8)."""
    body = _common(
        customer_id=customer_id, txn_date=txn_date, payment_ref=payment_ref, note=note,
        deposit_account_id=deposit_account_id, currency=currency,
    )  # fmt: skip
    body["Line"] = [
        {
            "Amount": _amount(amount),
            "DetailType": "SalesItemLineDetail",
            "Description": description[:4000],
            "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": 1, "UnitPrice": _amount(amount)},
        }
    ]
    return body
