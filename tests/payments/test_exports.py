"""The payments CSV reads only the columns it writes: the same bytes as when it was built from
model instances, in a constant number of queries however many rows."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.money import from_minor
from core.status import PaymentStatus
from core.timezones import local_iso
from payments.exports import payments_csv_lines
from payments.models import MappingStatus, Payment
from payments.models.money import PaymentMethod
from tests.factories import (
    AccountFactory,
    PaymentFactory,
    PaymentRequestFactory,
    PaymentSyncFactory,
    SchoolFactory,
    StudentFactory,
)


def lines_from_instances(queryset) -> list[str]:
    """The export as it was written before: four model instances a row, every column read."""

    class Echo:
        def write(self, value):
            return value

    def cell(value) -> str:
        text = "" if value is None else str(value)
        return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text

    writer = csv.writer(Echo())
    from payments.exports import CSV_HEADER

    lines = [writer.writerow(CSV_HEADER)]
    for payment in queryset.select_related("school", "student", "qbo_sync", "payment_request").order_by(
        "created_at", "pk"
    ):
        sync = getattr(payment, "qbo_sync", None)
        zone = payment.school.time_zone
        request = payment.payment_request
        lines.append(
            writer.writerow(
                [
                    local_iso(payment.created_at, zone),
                    local_iso(payment.settled_at, zone),
                    payment.school.code,
                    payment.provider,
                    payment.method,
                    cell(payment.reference),
                    cell(payment.manual_reference),
                    cell(payment.external_txn_id),
                    from_minor(payment.amount_minor, payment.currency),
                    payment.amount_minor,
                    payment.currency,
                    payment.refunded_amount_minor,
                    payment.status,
                    cell(payment.student.student_number if payment.student else ""),
                    cell(payment.student.full_name if payment.student else ""),
                    cell(payment.provider_student_id),
                    payment.mapping_status,
                    request.pk if request else "",
                    cell(request.description if request else ""),
                    sync.status if sync else "",
                    sync.txn_id if sync else "",
                ]
            )  # fmt: skip
        )
    return lines


@pytest.fixture
def mixed_payments(db):
    """Payments with and without a student, a request and a sync, in two zones and currencies,
    with values a spreadsheet would take for formulas."""
    kampala = SchoolFactory(code="kla", currency="UGX", time_zone="Africa/Kampala")
    nairobi = SchoolFactory(code="nbo", currency="KES", time_zone="Africa/Nairobi")
    ug, ke = AccountFactory(school=kampala), AccountFactory(school=nairobi, provider="mpesa")
    plain = StudentFactory(school=kampala, student_number="STU-1", full_name="Amina Nakato")
    formula = StudentFactory(school=nairobi, student_number="-42", full_name='=HYPERLINK("http://x")')
    request = PaymentRequestFactory(school=nairobi, student=formula, description="@SUM(A1) term fees")
    payments = [
        PaymentFactory(account=ug, status=PaymentStatus.SUCCEEDED, student=plain, mapping_status=MappingStatus.MAPPED),
        PaymentFactory(account=ug, status=PaymentStatus.PENDING, provider_student_id="+256700000000"),
        PaymentFactory(
            account=ke,
            currency="KES",
            amount_minor=123_456,
            status=PaymentStatus.SUCCEEDED,
            student=formula,
            payment_request=request,
            reference="=1+1",
            external_txn_id="@txn",
        ),  # fmt: skip
        PaymentFactory(
            account=ke,
            currency="KES",
            status=PaymentStatus.AWAITING_REVIEW,
            method=PaymentMethod.BANK_TRANSFER,
            manual_reference="\tTAB-1",
            external_txn_id=None,
            provider="manual",
        ),  # fmt: skip
    ]
    # A cent in a two-decimal currency, and settled at a time with microseconds (its now()).
    payments.append(PaymentFactory(account=ke, currency="KES", amount_minor=100, status=PaymentStatus.SUCCEEDED))
    PaymentSyncFactory(payment=payments[0], status="synced", txn_id="QB-7")
    PaymentSyncFactory(payment=payments[2], status="failed")
    # Distinct times, one after midnight in Nairobi and before it in UTC.
    start = datetime(2026, 12, 4, 21, 30, tzinfo=dt_timezone.utc)
    for index, payment in enumerate(payments):
        Payment.objects.filter(pk=payment.pk).update(created_at=start + timedelta(minutes=index))
    return payments


def test_the_export_has_exactly_the_lines_it_had_when_built_from_instances(mixed_payments):
    queryset = Payment.objects.all()
    lines = list(payments_csv_lines(queryset))
    assert lines == lines_from_instances(queryset)
    assert len(lines) == 1 + len(mixed_payments)
    text = "".join(lines)
    # The formula escapes, exact amounts and school times are those of before.
    assert "'=HYPERLINK" in text and "'-42" in text and "'@SUM(A1)" in text and "'=1+1" in text
    assert "'+256700000000" in text and "'\tTAB-1" in text
    assert "1234.56" in text
    assert "2026-12-05T00:32:00+03:00" in text and "2026-12-05T00:30:00+03:00" in text


def test_the_export_makes_the_same_queries_for_one_row_or_many(mixed_payments):
    def queries(queryset) -> int:
        with CaptureQueriesContext(connection) as captured:
            lines = list(payments_csv_lines(queryset))
        assert len(lines) == queryset.count() + 1
        return len(captured)

    one = queries(Payment.objects.filter(pk=mixed_payments[0].pk))
    account = mixed_payments[0].account
    for _ in range(25):
        PaymentSyncFactory(payment=PaymentFactory(account=account, status=PaymentStatus.SUCCEEDED))
    assert queries(Payment.objects.all()) == one == 1
