"""Risk scoring (payments/risk.py): each rule on its own, the score kept on the payment through
settlement, the school's threshold, the hold from the books until staff clear it, the dashboard,
the list filter and the API."""

import time
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from core.status import PaymentStatus as S
from payments import risk
from payments.ledger import FactKind, FactSource
from payments.models import AuditLog, Payment, TransactionFact
from payments.services import (
    RiskClearRefused,
    payment_event_apply,
    payment_risk_clear,
)
from providers.base import DisputeReport, NormalizedEvent, RefundReport
from quickbooks_sync.selectors import payment_is_ready, ready_unsynced_payments
from tests.factories import AccountFactory, PaymentFactory, PaymentRequestFactory, StudentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def acct(school):
    return AccountFactory(school=school, provider="surepay", webhook_secret="sekret")


def pay(acct, **fields) -> Payment:
    defaults = {"external_txn_id": None, "amount_minor": 450_000, "currency": acct.school.currency, "status": S.SUCCEEDED}
    return PaymentFactory(account=acct, **{**defaults, **fields})


def codes(payment) -> list[str]:
    return [reason.code for reason in risk.payment_risk_assess(payment).reasons]


# --- One test per rule -------------------------------------------------------------------------


def test_amount_far_from_the_request(acct):
    request = PaymentRequestFactory(school=acct.school, amount_minor=450_000)
    assert risk.amount_far_from_request(pay(acct, payment_request=request, amount_minor=450_000)) is None
    assert risk.amount_far_from_request(pay(acct, payment_request=request, amount_minor=600_000)) is None  # 1.33x
    far = risk.amount_far_from_request(pay(acct, payment_request=request, amount_minor=1_000_000))
    assert far == risk.Reason("amount_vs_request", 25, "paid UGX 1,000,000 for a request of UGX 450,000")
    assert risk.amount_far_from_request(pay(acct, payment_request=request, amount_minor=100_000)).points == 25
    assert risk.amount_far_from_request(pay(acct, amount_minor=1_000_000)) is None  # no request


def test_amount_far_from_the_schools_usual(acct):
    first = pay(acct, amount_minor=5_000_000)
    assert risk.amount_far_from_usual(first) is None  # too little history to say what usual is
    for _ in range(10):
        pay(acct, amount_minor=400_000)
    big = risk.amount_far_from_usual(pay(acct, amount_minor=2_500_000))
    assert (big.code, big.points) == ("amount_vs_usual", 25) and "6 times the school's usual UGX 400,000" in big.detail
    assert risk.amount_far_from_usual(pay(acct, amount_minor=30_000)).points == 10
    assert risk.amount_far_from_usual(pay(acct, amount_minor=900_000)) is None


def test_a_busy_schools_usual_amount_is_read_at_most_once_a_minute(acct, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(risk, "USUAL_SAMPLE", 12)
    monkeypatch.setattr(risk, "_usual_cache", {})
    for _ in range(11):
        pay(acct, amount_minor=400_000)
    payment = pay(acct, amount_minor=2_500_000)
    assert risk.usual_amount(payment) == 400_000
    assert risk._usual_cache == {}  # a sample short of full is read every time
    pay(acct, amount_minor=400_000)
    assert risk.usual_amount(payment) == 400_000
    for _ in range(12):
        pay(acct, amount_minor=4_000_000)
    with django_assert_num_queries(0):
        assert risk.usual_amount(payment) == 400_000  # the figure of less than a minute ago
    key = (acct.school_id, payment.currency)
    risk._usual_cache[key] = (time.monotonic() - 1, risk._usual_cache[key][1])  # a minute later
    assert risk.usual_amount(payment) == 4_000_000


def test_many_failures_or_attempts_from_the_same_payer(acct):
    payer = {"phone": "254712345678"}
    payment = pay(acct, payer=payer)
    for _ in range(2):
        pay(acct, payer=payer, status=S.FAILED)
    assert risk.many_attempts_from_payer(payment) is None
    pay(acct, payer={"phone": "254712345678"}, status=S.CANCELLED)
    assert risk.many_attempts_from_payer(payment) == risk.Reason(
        "payer_failures", 20, "the same payer had 3 failed or cancelled attempts within a day")
    other = pay(acct, payer={"email": "Parent@Example.com"})
    for _ in range(6):
        pay(acct, payer={"email": "parent@example.com"}, status=S.SUCCEEDED)
    assert risk.many_attempts_from_payer(other).code == "payer_attempts"
    old = pay(acct, payer={"phone": "254700000001"})
    stale = [pay(acct, payer={"phone": "254700000001"}, status=S.FAILED) for _ in range(3)]
    Payment.objects.filter(pk__in=[p.pk for p in stale]).update(created_at=timezone.now() - timedelta(days=2))
    assert risk.many_attempts_from_payer(old) is None  # outside the day
    assert risk.many_attempts_from_payer(pay(acct, payer={"phone": "2547****678"})) is None  # masked: nobody


def test_one_phone_or_card_across_many_students(acct):
    card = {"card_fingerprint": "fp_9f8e7d"}
    students = [StudentFactory(school=acct.school) for _ in range(4)]
    for student in students[:2]:
        pay(acct, payer=card, student=student)
    family = pay(acct, payer=card, student=students[2])
    assert risk.payer_across_students(family) is None  # three children: a family
    many = pay(acct, payer=card, student=students[3])
    assert risk.payer_across_students(many) == risk.Reason(
        "payer_across_students", 30, "the same card paid for 4 students within 30 days")
    assert risk.payer_across_students(pay(acct, payer=card)) is None  # not mapped yet


def test_currency_and_country_mismatch(acct):
    assert risk.currency_mismatch(pay(acct, currency="USD")) == risk.Reason(
        "currency_mismatch", 20, "paid in USD, the school bills in UGX")
    assert risk.currency_mismatch(pay(acct)) is None
    assert risk.country_mismatch(pay(acct, payer={"country": "ng"})) == risk.Reason(
        "country_mismatch", 15, "the payer's country NG is not the school's (UG)")
    assert risk.country_mismatch(pay(acct, payer={"country": "UG"})) is None
    assert risk.country_mismatch(pay(acct)) is None


def _fact(payment, kind, status, days_after_paying):
    TransactionFact.objects.create(
        school=payment.school, account=payment.account, payment=payment, kind=kind, key=f"{kind}-{days_after_paying}",
        status=status, amount_minor=100, currency=payment.currency, source=FactSource.PROVIDER_EVENT,
        occurred_at=payment.settled_at + timedelta(days=days_after_paying),
    )  # fmt: skip


def test_refund_or_dispute_soon_after_paying(acct):
    settled = timezone.now() - timedelta(days=60)
    refunded_soon, refunded_late, disputed = (pay(acct, settled_at=settled) for _ in range(3))
    _fact(refunded_soon, FactKind.REFUND, "succeeded", 2)
    _fact(refunded_late, FactKind.REFUND, "succeeded", 20)
    _fact(disputed, FactKind.DISPUTE, "open", 10)
    assert risk.taken_back_soon(refunded_soon) == risk.Reason("refund_soon", 20, "refunded within 7 days of paying")
    assert risk.taken_back_soon(refunded_late) is None
    assert risk.taken_back_soon(disputed) == risk.Reason("dispute_soon", 40, "disputed (chargeback) within 30 days of paying")
    assert risk.taken_back_soon(pay(acct)) is None


def test_manual_report_without_a_receipt(acct):
    assert risk.manual_without_receipt(pay(acct, method="bank_transfer")) == risk.Reason(
        "manual_no_receipt", 15, "reported by hand without a receipt")
    with_receipt = pay(acct, method="bank_transfer")
    with_receipt.receipt.save("slip.pdf", ContentFile(b"%PDF-1.4 slip"), save=True)
    assert risk.manual_without_receipt(with_receipt) is None
    assert risk.manual_without_receipt(pay(acct)) is None


def test_the_score_adds_up_and_is_capped_at_100(acct):
    payment = pay(acct, currency="USD", method="cash", payer={"country": "NG"}, settled_at=timezone.now())
    _fact(payment, FactKind.DISPUTE, "open", 1)
    assessment = risk.payment_risk_assess(payment)
    assert [r.code for r in assessment.reasons] == ["currency_mismatch", "country_mismatch", "dispute_soon", "manual_no_receipt"]
    assert assessment.score == 90
    payment.payment_request = PaymentRequestFactory(school=acct.school, amount_minor=450_000, currency="USD")
    payment.amount_minor = 5_000_000
    assert risk.payment_risk_assess(payment).score == 100  # 115 points
    assert risk.payment_risk_assess(pay(acct)).score == 0


# --- Through settlement: flagged, held, cleared ----------------------------------------------------


def settle(acct, txn: str, amount: int, **event) -> Payment:
    from django.db import transaction

    with transaction.atomic():
        return payment_event_apply(account=acct, event=NormalizedEvent(
            event_id=f"e-{txn}-{len(event)}", event_type="t", status=S.SUCCEEDED, external_txn_id=txn,
            amount_minor=amount, currency=event.pop("currency", "UGX"), **event)).payment  # fmt: skip


def test_a_payment_is_scored_when_it_settles_and_flagged_at_the_schools_threshold(acct, settings):
    settings.HIGH_RISK_THRESHOLD = 70
    payment = settle(acct, "t-1", 100, currency="USD", payer={"country": "NG"})
    assert (payment.risk_score, payment.risk_flagged, payment.risk_held) == (35, False, False)
    assert [r["code"] for r in payment.risk_reasons] == ["currency_mismatch", "country_mismatch"]
    acct.school.risk_threshold = 30
    acct.school.save()
    assert settle(acct, "t-2", 100, currency="USD", payer={"country": "NG"}).risk_flagged is True


def test_a_held_payment_waits_for_staff_before_the_books(acct, settings, fake_directory):
    acct.school.risk_threshold, acct.school.risk_hold_from_books = 30, True
    acct.school.save()
    student = StudentFactory(school=acct.school)
    payment = settle(acct, "t-3", 100, currency="USD", payer={"country": "NG"})
    Payment.objects.filter(pk=payment.pk).update(student=student, mapping_status="mapped")
    payment.refresh_from_db()
    assert payment.risk_held and not payment_is_ready(payment)
    assert payment not in ready_unsynced_payments(school_id=acct.school_id, since=timezone.now() - timedelta(days=1))
    settings.PAYMENT_BOOKS_HOOKS = ["tests.payments.test_risk.record_offer"]
    RECORDED.clear()
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        payment_risk_clear(payment_id=payment.pk, actor="bursar", note="called the parent")
    payment.refresh_from_db()
    assert (payment.risk_held, payment.risk_flagged, payment.risk_cleared_by) == (False, True, "bursar")
    assert payment_is_ready(payment) and RECORDED == [payment.pk]
    entry = AuditLog.objects.get(action="payment.risk_cleared")
    assert entry.details == {"score": 35, "was_held": True, "note": "called the parent"}
    with pytest.raises(RiskClearRefused, match="Already cleared by bursar"):
        payment_risk_clear(payment_id=payment.pk, actor="bursar")


def test_a_clearance_stands_until_the_score_rises(acct):
    acct.school.risk_threshold, acct.school.risk_hold_from_books = 30, True
    acct.school.save()
    payment = settle(acct, "t-4", 100, currency="USD", payer={"country": "NG"})
    payment_risk_clear(payment_id=payment.pk, actor="bursar")
    again = settle(acct, "t-4", 100, currency="USD", payer={"country": "NG"})
    assert (again.risk_cleared_by, again.risk_held) == ("bursar", False)
    from django.db import transaction

    with transaction.atomic():
        disputed = payment_event_apply(account=acct, event=NormalizedEvent(
            event_id="d-4", event_type="dispute", status=None, external_txn_id="t-4", currency="USD",
            disputes=(DisputeReport("dp_1", 100, "open"),))).payment  # fmt: skip
    assert disputed.risk_score == 75 and disputed.risk_held and disputed.risk_cleared_at is None


def test_a_refund_soon_after_paying_raises_the_score(acct):
    payment = settle(acct, "t-5", 450_000)
    assert payment.risk_score == 0
    from django.db import transaction

    with transaction.atomic():
        refunded = payment_event_apply(account=acct, event=NormalizedEvent(
            event_id="r-5", event_type="refund", status=None, external_txn_id="t-5", currency="UGX",
            refunds=(RefundReport("re_1", 100_000),))).payment  # fmt: skip
    assert refunded.risk_score == 20 and refunded.risk_reasons[0]["code"] == "refund_soon"


def test_clearing_a_payment_that_is_not_flagged_is_refused(acct):
    with pytest.raises(RiskClearRefused, match="not flagged"):
        payment_risk_clear(payment_id=settle(acct, "t-6", 100).pk, actor="bursar")


RECORDED: list = []


def record_offer(*, payment_ids):
    RECORDED.extend(payment_ids)


# --- Where staff see it ----------------------------------------------------------------------------


def test_the_dashboard_and_the_list_filter_show_high_risk_payments(client, acct):
    from tests.admin.conftest import make_school_staff

    acct.school.risk_threshold, acct.school.risk_hold_from_books = 30, True
    acct.school.save()
    flagged = settle(acct, "t-7", 100, currency="USD", payer={"country": "NG"})
    settle(acct, "t-8", 100)
    client.force_login(make_school_staff("bursar-ng", acct.school))
    page = client.get("/admin/dashboard/").content.decode()
    assert "High-risk payments to look at" in page and "?risk=high" in page
    listing = client.get("/admin/payments/payment/?risk=held")
    assert [p.pk for p in listing.context["cl"].result_list] == [flagged.pk]
    assert "35 (held)" in listing.content.decode()
    response = client.post("/admin/payments/payment/", {"action": "clear_risk", "_selected_action": [flagged.pk]}, follow=True)
    assert any("cleared (score 35)" in str(m) for m in response.context["messages"])
    assert client.get("/admin/payments/payment/?risk=held").context["cl"].result_count == 0


def test_the_api_lists_risk_and_filters_on_it(acct, staff):
    from tests.payments.test_api import api_for

    acct.school.risk_threshold = 30
    acct.school.save()
    flagged = settle(acct, "t-9", 100, currency="USD", payer={"country": "NG"})
    settle(acct, "t-10", 100)
    api = api_for(staff)
    rows = api.get("/api/payments/", {"risk": "high"}).json()["results"]
    assert [(r["id"], r["risk_score"], r["risk_flagged"]) for r in rows] == [(str(flagged.pk), 35, True)]
    assert rows[0]["risk_reasons"][0] == {"code": "currency_mismatch", "points": 20, "detail": "paid in USD, the school bills in UGX"}
    assert api.get("/api/payments/", {"risk": "held"}).json()["results"] == []
    bad = api.get("/api/payments/", {"risk": "odd"})
    assert (bad.status_code, bad.json()) == (400, {"risk": ["Must be high or held."]})


def test_mapping_to_a_student_scores_the_payment_again(acct, staff):
    from payments.services import payment_student_assign

    card = {"card_fingerprint": "fp_many"}
    for _ in range(3):
        pay(acct, payer=card, student=StudentFactory(school=acct.school))
    acct.school.risk_threshold = 30
    acct.school.save()
    payment = settle(acct, "t-11", 100, payer=card)
    assert payment.risk_score == 0
    payment_student_assign(payment_id=payment.pk, student_number="NEW-1", full_name="New Pupil", actor=staff)
    payment.refresh_from_db()
    assert (payment.risk_score, payment.risk_flagged) == (30, True)
    assert payment.risk_reasons == [{"code": "payer_across_students", "points": 30,
                                     "detail": "the same card paid for 4 students within 30 days"}]
