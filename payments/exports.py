"""The payments CSV that staff export from the admin list (what their accountant opens)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from core.money import exponent
from core.timezones import zone
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


# Exactly the columns the CSV shows, joined in the one query: building four model instances
# from every column of four tables for each row cost ten times the query itself.
_COLUMNS = (
    "created_text",
    "settled_text",
    "school__code",
    "school__time_zone",
    "provider",
    "method",
    "reference",
    "manual_reference",
    "external_txn_id",
    "amount_minor",
    "currency",
    "refunded_amount_minor",
    "status",
    "student__student_number",
    "student__full_name",
    "provider_student_id",
    "mapping_status",
    "payment_request_id",
    "payment_request__description",
    "qbo_sync__status",
    "qbo_sync__txn_id",
)
# Rows fetched from the server-side cursor at a time: the memory stays the same for any export.
CHUNK_ROWS = 2000
# Lines handed to the response at a time: each piece costs the server a few calls of its own.
LINES_PER_PIECE = 500


def payments_csv_lines(queryset: QuerySet[Payment]) -> Iterator[str]:
    """The CSV, a line at a time (streamed: a year of payments must not sit in memory). Amounts
    are exact: ``amount`` in major units as a plain decimal, ``amount_minor`` the integer. Times
    are ISO 8601 in the school's zone, with its offset (``2026-12-05T22:15:00+03:00``)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    # The times come as PostgreSQL's text ("2026-12-05 19:15:00.5+00"), read by the C of
    # datetime.fromisoformat: Django's own reader of timestamptz is Python, a third of the export.
    rows = (
        queryset.annotate(created_text=Cast("created_at", TextField()), settled_text=Cast("settled_at", TextField()))
        .order_by("created_at", "pk")
        .values_list(*_COLUMNS)
        .iterator(chunk_size=CHUNK_ROWS)
    )
    parse_time = datetime.fromisoformat
    zones: dict[str | None, ZoneInfo] = {}
    # ``core.money.from_minor`` exactly (the integer shifted by the currency's exponent, every
    # decimal place written), with the exponent looked up once per currency, not per row.
    places: dict[str, int] = {}
    for (
        created_text, settled_text, school_code, zone_name, provider, method, reference, manual_reference,
        external_txn_id, amount_minor, currency, refunded_minor, status, student_number, student_name,
        provider_student_id, mapping_status, request_id, description, sync_status, sync_txn_id,
    ) in rows:  # fmt: skip
        tz = zones.get(zone_name)
        if tz is None:
            tz = zones[zone_name] = zone(zone_name)
        shift = places.get(currency)
        if shift is None:
            shift = places[currency] = -exponent(currency)
        yield writer.writerow(
            [
                parse_time(created_text).astimezone(tz).isoformat(),
                "" if settled_text is None else parse_time(settled_text).astimezone(tz).isoformat(),
                school_code,
                provider,
                method,
                _cell(reference),
                _cell(manual_reference),
                _cell(external_txn_id),
                Decimal(amount_minor).scaleb(shift),
                amount_minor,
                currency,
                refunded_minor,
                status,
                _cell(student_number),
                _cell(student_name),
                _cell(provider_student_id),
                mapping_status,
                "" if request_id is None else request_id,
                _cell(description),
                sync_status or "",
                sync_txn_id or "",
            ]
        )


def payments_csv_pieces(queryset: QuerySet[Payment]) -> Iterator[str]:
    """``payments_csv_lines`` a few hundred lines at a time, for a streamed response."""
    piece: list[str] = []
    for line in payments_csv_lines(queryset):
        piece.append(line)
        if len(piece) == LINES_PER_PIECE:
            yield "".join(piece)
            piece.clear()
    if piece:
        yield "".join(piece)
