"""``manage.py reconcile``: the ledger's settled net against what is in QuickBooks, per school and
currency, and every payment whose documents do not add up (and why)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.status import PaymentStatus as S
from payments.models import Payment
from quickbooks_sync import services as qbo
from tests.factories import PaymentFactory, report
from tests.ledger.conftest import provider_account

pytestmark = pytest.mark.django_db


def reconcile(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("reconcile", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue()


def settled(account, student, amount=100_000, **fields) -> Payment:
    payment = PaymentFactory(account=account, status=S.SUCCEEDED, amount_minor=amount, currency="UGX", student=student,
                             mapping_status="mapped", **fields)  # fmt: skip
    return payment


def test_books_that_follow_the_ledger_report_no_difference(books, fake_qbo):
    ledger = books("ug", "UGX")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    payment = settled(account, ledger.student)
    report(payment, refunds=[("re_1", 30_000)])
    qbo.qbo_backlog_scan()
    qbo.qbo_school_sync(school_id=ledger.school.pk)
    code, out = reconcile()
    assert code == 0
    assert out.splitlines() == ["ug UGX: 1 payments, ledger UGX 70,000, QuickBooks UGX 70,000, 0 differ", "Differences: 0"]


def test_a_payment_whose_documents_do_not_add_up_is_listed_with_the_reason(books, fake_qbo):
    ledger = books("ug", "UGX")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    synced = settled(account, ledger.student)
    qbo.qbo_backlog_scan()
    qbo.qbo_school_sync(school_id=ledger.school.pk)
    report(synced, refunds=[("re_1", 30_000)])  # the refund is not in QuickBooks yet
    unmapped = settled(account, None, 50_000)
    code, out = reconcile("--school", "ug")
    assert code == 1
    assert out.splitlines()[:3] == [
        "ug UGX: 2 payments, ledger UGX 120,000, QuickBooks UGX 100,000, 2 differ",
        f"  payment {synced.pk} (partially_refunded): net UGX 70,000, in QuickBooks UGX 100,000: not in QuickBooks yet",
        f"  payment {unmapped.pk} (succeeded): net UGX 50,000, in QuickBooks UGX 0: not mapped to a student",
    ]


def test_the_dashboard_reads_the_totals_and_its_first_differences_not_every_payment(books, fake_qbo, django_assert_max_num_queries):
    from quickbooks_sync.selectors import reconciliation

    ledger = books("ug", "UGX")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    synced = [settled(account, ledger.student) for _ in range(3)]
    qbo.qbo_backlog_scan()
    qbo.qbo_school_sync(school_id=ledger.school.pk)
    waiting = [settled(account, ledger.student, 20_000) for _ in range(5)]  # not in QuickBooks yet
    # A constant number of queries, whatever the number of payments.
    with django_assert_max_num_queries(9):
        shown = reconciliation(differences_limit=2)
    (row,) = shown.schools
    assert (row.payments, row.ledger_net_minor, row.books_minor, row.difference_count) == (8, 400_000, 300_000, 5)
    assert [difference.payment_id for difference in row.differences] == [str(p.pk) for p in waiting[:2]]
    assert shown.differences == 5
    everything = reconciliation()
    assert [d.payment_id for d in everything.schools[0].differences] == [str(p.pk) for p in waiting]
    assert {d.reason for d in everything.schools[0].differences} == {"not in QuickBooks yet"}
    assert all(str(p.pk) not in {d.payment_id for d in everything.schools[0].differences} for p in synced)


def test_a_school_without_quickbooks_is_listed_with_its_ledger_only(db):
    payment = PaymentFactory(status=S.SUCCEEDED, amount_minor=40_000)
    code, out = reconcile("--json")
    assert code == 0
    data = json.loads(out)
    assert data["differences"] == 0
    assert data["schools"] == [{
        "school_code": payment.school.code, "currency": "UGX", "connected": False, "payments": 1,
        "ledger_net_minor": 40_000, "books_minor": 0, "differences": [], "difference_count": 0,
    }]  # fmt: skip


def test_payments_not_final_after_their_last_check_are_listed(db):
    stuck = PaymentFactory(status=S.PROCESSING)
    Payment.objects.filter(pk=stuck.pk).update(next_check_at=None)
    code, out = reconcile()
    assert code == 1
    assert f"  payment {stuck.pk} (processing): no check scheduled" in out.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--school", "nope"], "unknown school 'nope'"), (["--since", "yesterday"], "--since must be a date (YYYY-MM-DD)")],
)
def test_bad_input_is_a_one_line_error(db, args, message):
    with pytest.raises(CommandError) as refused:
        call_command("reconcile", *args)
    assert message in str(refused.value) and refused.value.returncode == 2
