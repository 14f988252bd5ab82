"""The payments CSV that staff export from the admin list (what their accountant opens)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from core.money import from_minor
from core.timezones import local_iso
from payments.models import Payment

CSV_HEADER = (
    "created_at",
    "settled_at",
    "school",
    "provider",
    "method",
    "reference",
    "parent_reference",
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
    "request",
    "description",
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
    are exact: ``amount`` in major units as a plain decimal, ``amount_minor`` the integer. Times
    are ISO 8601 in the school's zone, with its offset (``2026-12-05T22:15:00+03:00``)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    rows: Iterable[Payment] = (
        queryset.select_related("school", "student", "qbo_sync", "payment_request")
        .order_by("created_at", "pk")
        .iterator(chunk_size=2000)
    )
    for payment in rows:
        sync = getattr(payment, "qbo_sync", None)
        zone = payment.school.time_zone
        request = payment.payment_request
        yield writer.writerow(
            [
                local_iso(payment.created_at, zone),
                local_iso(payment.settled_at, zone),
                payment.school.code,
                payment.provider,
                payment.method,
                _cell(payment.reference),
                _cell(payment.manual_reference),
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
                request.pk if request else "",
                _cell(request.description if request else ""),
                sync.status if sync else "",
                sync.txn_id if sync else "",
            ]
        )
