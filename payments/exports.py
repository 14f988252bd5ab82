"""The payments CSV that staff export from the admin list (what their accountant opens)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from core.money import from_minor
from payments.models import Payment

CSV_HEADER = (
    "created_at",
    "school",
    "provider",
    "method",
    "reference",
    "transaction_id",
    "amount",
    "amount_minor",
    "currency",
    "refunded_minor",
    "status",
    "student_id",
    "student_name",
    "provider_student_id",
    "mapping_status",
    "quickbooks_sync",
    "quickbooks_id",
)

# A cell starting with one of these is a formula to a spreadsheet: a payer-controlled value
# (a name, a reference) must not run in the accountant's Excel.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def payments_csv_lines(queryset: QuerySet[Payment]) -> Iterator[str]:
    """The CSV, a line at a time (streamed: a year of payments must not sit in memory). Amounts
    are exact: ``amount`` in major units as a plain decimal, ``amount_minor`` the integer."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    rows: Iterable[Payment] = (
        queryset.select_related("school", "student", "qbo_sync").order_by("created_at", "pk").iterator(chunk_size=2000)
    )
    for payment in rows:
        sync = getattr(payment, "qbo_sync", None)
        yield writer.writerow(
            [
                payment.created_at.isoformat(),
                payment.school.code,
                payment.provider,
                payment.method,
                _cell(payment.reference),
                _cell(payment.external_txn_id),
                from_minor(payment.amount_minor, payment.currency),
                payment.amount_minor,
                payment.currency,
                payment.refunded_amount_minor,
                payment.status,
                _cell(payment.student.student_number if payment.student else ""),
                _cell(payment.student.full_name if payment.student else ""),
                _cell(payment.provider_student_id),
                payment.mapping_status,
                sync.status if sync else "",
                sync.txn_id if sync else "",
            ]
        )
