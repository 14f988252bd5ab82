"""Risk scoring: every rule in one place. A payment's score is the sum of the points of the rules
it trips, capped at 100, with one plain-language reason per rule, so staff can see why.

Each rule looks at one payment (and, where it must, that school's other payments) and answers a
``Reason`` or None. The score is recomputed whenever the payment settles
(``payments.services.settlement.payment_settle``): a refund or a dispute after the money arrived
raises it then. At or above the school's threshold (``School.risk_threshold``, else the
``HIGH_RISK_THRESHOLD`` setting) the payment is flagged for staff; if the school holds flagged
payments from the books (``School.risk_hold_from_books``), it waits until a staff member clears
it (``payments.services.risk``).

The points are a starting point, chosen so that one strong sign (a chargeback soon after paying,
one phone paying for many students) flags a payment by itself at the default threshold of 70 only
together with another sign, and no single weak sign does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from core.money import format_minor
from core.status import PaymentStatus
from payments.ledger import FactKind
from payments.models import Payment, PaymentMethod, TransactionFact
from payments.state import SETTLED_STATES

MAX_SCORE = 100

# How far from the request a paid amount may be before it is a sign (a ratio either way).
REQUEST_RATIO = 1.5
# The school's usual payments: its settled payments in the currency over this many days, when
# there are enough of them to say what usual is.
USUAL_WINDOW = timedelta(days=180)
USUAL_MIN_PAYMENTS = 10
USUAL_SAMPLE = 500
USUAL_HIGH_RATIO = 5
USUAL_LOW_RATIO = 10
# The same payer (phone, email or card) within this window.
PAYER_WINDOW = timedelta(hours=24)
PAYER_MAX_FAILURES = 3  # failed or cancelled attempts
PAYER_MAX_ATTEMPTS = 6
# One phone or card paying for more students than a family has.
FINGERPRINT_WINDOW = timedelta(days=30)
FINGERPRINT_MAX_STUDENTS = 3
# Money taken back soon after it arrived.
REFUND_SOON = timedelta(days=7)
DISPUTE_SOON = timedelta(days=30)
# The country of a school, from its currency (schools have no country of their own).
CURRENCY_COUNTRY = {"KES": "KE", "UGX": "UG", "TZS": "TZ", "RWF": "RW", "NGN": "NG", "GHS": "GH", "ZAR": "ZA",
                    "ETB": "ET", "THB": "TH", "ZMW": "ZM", "MWK": "MW", "XOF": "SN", "XAF": "CM"}  # fmt: skip
FAILED_STATES = (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.EXPIRED)


@dataclass(frozen=True)
class Reason:
    code: str
    points: int
    detail: str

    def as_json(self) -> dict:
        return {"code": self.code, "points": self.points, "detail": self.detail}


@dataclass(frozen=True)
class RiskAssessment:
    score: int
    reasons: tuple[Reason, ...]

    def flagged(self, threshold: int) -> bool:
        return self.score >= threshold


def threshold_for(school) -> int:
    return school.risk_threshold or settings.HIGH_RISK_THRESHOLD


def payer_keys(payer: dict) -> dict[str, str]:
    """The payer's identifying details we compare across payments."""
    keys = {}
    for name in ("phone", "email", "card_fingerprint"):
        value = str((payer or {}).get(name) or "").strip().lower()
        if value and "*" not in value:  # a masked number (M-Pesa C2B) identifies nobody
            keys[name] = value
    return keys


def _same_payer(payment: Payment) -> Q | None:
    keys = payer_keys(payment.payer)
    if not keys:
        return None
    condition = Q()
    for name, value in keys.items():
        condition |= Q(**{f"payer__{name}__iexact": value})
    return condition


# --- The rules --------------------------------------------------------------------------------


def amount_far_from_request(payment: Payment) -> Reason | None:
    request = payment.payment_request
    if request is None or request.currency != payment.currency or not request.amount_minor or not payment.amount_minor:
        return None
    ratio = payment.amount_minor / request.amount_minor
    if 1 / REQUEST_RATIO <= ratio <= REQUEST_RATIO:
        return None
    return Reason("amount_vs_request", 25, f"paid {payment.amount_display} for a request of "
                                           f"{format_minor(request.amount_minor, request.currency)}")  # fmt: skip


def amount_far_from_usual(payment: Payment) -> Reason | None:
    usual = usual_amount(payment)
    if usual is None or not payment.amount_minor:
        return None
    if payment.amount_minor >= usual * USUAL_HIGH_RATIO:
        return Reason("amount_vs_usual", 25, f"{payment.amount_display} is {payment.amount_minor / usual:.0f} times "
                                             f"the school's usual {format_minor(int(usual), payment.currency)}")  # fmt: skip
    if payment.amount_minor * USUAL_LOW_RATIO <= usual:
        return Reason("amount_vs_usual", 10, f"{payment.amount_display} is far below the school's usual "
                                             f"{format_minor(int(usual), payment.currency)}")  # fmt: skip
    return None


# A busy school's usual amount (the median of its last USUAL_SAMPLE payments) barely moves within a
# minute, and every payment settling would otherwise read those payments again: it is kept per
# process for USUAL_CACHE_SECONDS once the sample is full. A smaller school is read each time.
USUAL_CACHE_SECONDS = 60
_usual_cache: dict[tuple[int, str], tuple[float, float]] = {}


def usual_amount(payment: Payment) -> float | None:
    """The median of the school's recent settled payments in the currency, or None when there
    are too few to say what usual is."""
    key = (payment.school_id, payment.currency)
    cached = _usual_cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    since = (payment.created_at or payment.status_changed_at) - USUAL_WINDOW
    amounts = list(
        Payment.objects.filter(school_id=payment.school_id, currency=payment.currency, status__in=SETTLED_STATES,
                               created_at__gte=since)
        .exclude(pk=payment.pk).order_by("-created_at").values_list("amount_minor", flat=True)[:USUAL_SAMPLE]
    )  # fmt: skip
    if len(amounts) < USUAL_MIN_PAYMENTS:
        return None
    usual = statistics.median(amounts)
    if len(amounts) >= USUAL_SAMPLE:
        _usual_cache[key] = (time.monotonic() + USUAL_CACHE_SECONDS, usual)
    return usual


def many_attempts_from_payer(payment: Payment) -> Reason | None:
    same = _same_payer(payment)
    if same is None:
        return None
    since = (payment.created_at or payment.status_changed_at) - PAYER_WINDOW
    others = Payment.objects.filter(same, school_id=payment.school_id, created_at__gte=since).exclude(pk=payment.pk)
    failures = others.filter(status__in=FAILED_STATES).count()
    if failures >= PAYER_MAX_FAILURES:
        return Reason("payer_failures", 20, f"the same payer had {failures} failed or cancelled attempts within a day")
    attempts = others.count()
    if attempts >= PAYER_MAX_ATTEMPTS:
        return Reason("payer_attempts", 15, f"the same payer made {attempts} other payments within a day")
    return None


def payer_across_students(payment: Payment) -> Reason | None:
    same = _same_payer(payment)
    if same is None or payment.student_id is None:
        return None
    since = (payment.created_at or payment.status_changed_at) - FINGERPRINT_WINDOW
    students = set(
        Payment.objects.filter(same, school_id=payment.school_id, created_at__gte=since, student__isnull=False)
        .values_list("student_id", flat=True).distinct()
    ) | {payment.student_id}  # fmt: skip
    if len(students) <= FINGERPRINT_MAX_STUDENTS:
        return None
    what = "card" if "card_fingerprint" in payer_keys(payment.payer) else "phone or email"
    return Reason("payer_across_students", 30, f"the same {what} paid for {len(students)} students within 30 days")


def currency_mismatch(payment: Payment) -> Reason | None:
    if payment.currency and payment.currency != payment.school.currency:
        return Reason("currency_mismatch", 20, f"paid in {payment.currency}, the school bills in {payment.school.currency}")
    return None


def country_mismatch(payment: Payment) -> Reason | None:
    country = str((payment.payer or {}).get("country") or "").strip().upper()
    school_country = CURRENCY_COUNTRY.get(payment.school.currency)
    if country and school_country and country != school_country:
        return Reason("country_mismatch", 15, f"the payer's country {country} is not the school's ({school_country})")
    return None


def taken_back_soon(payment: Payment) -> Reason | None:
    if payment.settled_at is None:
        return None
    # The first dispute and the first succeeded refund, in one query.
    first: dict[str, datetime] = {}
    for kind, occurred_at in (
        TransactionFact.objects.filter(payment=payment)
        .filter(Q(kind=FactKind.DISPUTE) | Q(kind=FactKind.REFUND, status="succeeded"))
        .order_by("occurred_at")
        .values_list("kind", "occurred_at")
    ):
        first.setdefault(kind, occurred_at)
    dispute, refund = first.get(FactKind.DISPUTE), first.get(FactKind.REFUND)
    if dispute is not None and dispute - payment.settled_at <= DISPUTE_SOON:
        return Reason("dispute_soon", 40, "disputed (chargeback) within 30 days of paying")
    if refund is not None and refund - payment.settled_at <= REFUND_SOON:
        return Reason("refund_soon", 20, "refunded within 7 days of paying")
    return None


def manual_without_receipt(payment: Payment) -> Reason | None:
    if payment.method != PaymentMethod.PROVIDER and not payment.receipt:
        return Reason("manual_no_receipt", 15, "reported by hand without a receipt")
    return None


RULES: tuple[Callable[[Payment], Reason | None], ...] = (
    amount_far_from_request,
    amount_far_from_usual,
    many_attempts_from_payer,
    payer_across_students,
    currency_mismatch,
    country_mismatch,
    taken_back_soon,
    manual_without_receipt,
)


def payment_risk_assess(payment: Payment, facts=None) -> RiskAssessment:
    """``facts``: all of the payment's facts, when the caller holds them: without a refund or a
    dispute among them, money taken back soon has nothing to find, and is not looked for."""
    rules = RULES
    if facts is not None and not any(fact.kind in (FactKind.DISPUTE, FactKind.REFUND) for fact in facts):
        rules = tuple(rule for rule in RULES if rule is not taken_back_soon)
    reasons = tuple(reason for rule in rules if (reason := rule(payment)) is not None)
    return RiskAssessment(min(MAX_SCORE, sum(reason.points for reason in reasons)), reasons)
