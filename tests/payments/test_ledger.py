"""The ledger fold on its own: facts in, a payment's state and amounts out, in any order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from core.status import PaymentStatus as S
from payments.ledger import DisputeStatus as D
from payments.ledger import FactKind as K
from payments.ledger import FactSource as Src
from payments.ledger import RefundStatus as R
from payments.ledger import ledger_fold

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Fact:
    kind: str
    status: str = ""
    amount_minor: int | None = None
    key: str = ""
    currency: str = "KES"
    occurred_at: datetime = T0
    source: str = Src.PROVIDER_EVENT


def fold(*facts, initial=S.PENDING):
    return ledger_fold(facts, initial_status=initial, currency="KES")


def charge(status, amount=None, **kw):
    return Fact(K.CHARGE, status, amount, **kw)


def refund(key, amount, status=R.SUCCEEDED, **kw):
    return Fact(K.REFUND, status, amount, key=key, **kw)


class TestCharge:
    def test_no_facts_keeps_the_initial_state(self):
        assert fold().status == S.PENDING
        assert fold(initial=S.AWAITING_REVIEW).status == S.AWAITING_REVIEW

    def test_a_success_outranks_anything_else(self):
        ledger = fold(charge(S.FAILED), charge(S.SUCCEEDED, 60_000), charge(S.EXPIRED), charge(S.PROCESSING))
        assert (ledger.status, ledger.received_minor, ledger.net_minor) == (S.SUCCEEDED, 60_000, 60_000)

    def test_a_providers_failure_outranks_our_own_cancellation_and_expiry(self):
        assert fold(charge(S.CANCELLED, source=Src.SYSTEM), charge(S.FAILED)).status == S.FAILED
        assert fold(charge(S.EXPIRED, source=Src.SYSTEM), charge(S.PROCESSING)).status == S.EXPIRED

    def test_the_providers_api_is_believed_over_a_webhook_body(self):
        ledger = fold(charge(S.SUCCEEDED, 60_000), charge(S.SUCCEEDED, 50_000, source=Src.PROVIDER_API))
        assert ledger.received_minor == 50_000
        assert ledger.conflicts == ("different amounts were reported received: KES 500.00, KES 600.00; KES 500.00 is counted",)


class TestRefunds:
    def test_a_partial_reversal_before_its_success_is_counted_once_the_success_arrives(self):
        ledger = fold(refund("event:e1", 20_000), charge(S.SUCCEEDED, 60_000))
        assert (ledger.status, ledger.received_minor, ledger.refunded_minor, ledger.net_minor) == (
            S.PARTIALLY_REFUNDED, 60_000, 20_000, 40_000,
        )  # fmt: skip

    def test_a_refund_without_its_success_waits(self):
        ledger = fold(refund("re_1", 20_000), charge(S.PROCESSING))
        assert (ledger.status, ledger.refunded_minor, ledger.waiting, ledger.movements) == (S.PROCESSING, 0, True, ())

    def test_one_refund_reported_many_times_and_as_a_total_counts_once(self):
        ledger = fold(
            charge(S.SUCCEEDED, 100_000),
            refund("re_1", 30_000, R.PENDING),
            refund("re_1", 30_000),
            refund("re_1", 30_000, source=Src.PROVIDER_API),
            Fact(K.REFUNDED_TOTAL, amount_minor=30_000),
        )
        assert (ledger.refunded_minor, [m.key for m in ledger.movements]) == (30_000, ["charge", "refund:re_1"])

    def test_a_total_beyond_the_keyed_refunds_is_an_unattributed_refund(self):
        ledger = fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 30_000), Fact(K.REFUNDED_TOTAL, amount_minor=50_000))
        assert [(m.key, m.amount_minor) for m in ledger.movements] == [
            ("charge", 100_000), ("refund:re_1", -30_000), ("refund:unattributed", -20_000),
        ]  # fmt: skip

    def test_a_pending_refund_explains_its_part_of_a_total_until_it_is_done(self):
        # Stripe counts a refund in amount_refunded from its creation, while it is still pending.
        pending = fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 40_000, R.PENDING),
                       Fact(K.REFUNDED_TOTAL, amount_minor=40_000))  # fmt: skip
        assert (pending.refunded_minor, pending.refund_pending_minor, [m.key for m in pending.movements]) == (
            0, 40_000, ["charge"],
        )  # fmt: skip
        done = fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 40_000, R.PENDING), refund("re_1", 40_000),
                    Fact(K.REFUNDED_TOTAL, amount_minor=40_000))  # fmt: skip
        assert [(m.key, m.amount_minor) for m in done.movements] == [("charge", 100_000), ("refund:re_1", -40_000)]

    def test_a_refund_that_failed_after_it_succeeded_gives_the_money_back(self):
        later = T0 + timedelta(minutes=5)
        ledger = fold(
            charge(S.SUCCEEDED, 100_000),
            refund("re_1", 30_000),
            Fact(K.REFUNDED_TOTAL, amount_minor=30_000),
            refund("re_1", 30_000, R.FAILED, occurred_at=later),
        )
        assert (ledger.status, ledger.refunded_minor) == (S.SUCCEEDED, 0)

    def test_a_full_refund(self):
        assert fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 100_000)).status == S.REFUNDED

    def test_refunds_beyond_the_payment_are_capped_and_flagged(self):
        ledger = fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 70_000), refund("re_2", 70_000))
        assert (ledger.status, ledger.refunded_minor, ledger.net_minor) == (S.REFUNDED, 100_000, 0)
        assert "exceed" in ledger.conflicts[0]

    def test_a_refund_of_a_payment_the_provider_says_failed_is_a_conflict(self):
        ledger = fold(charge(S.FAILED), refund("re_1", 10_000))
        assert ledger.status == S.FAILED and ledger.conflicts and ledger.net_minor == 0

    def test_another_currency_is_never_added_up(self):
        ledger = fold(charge(S.SUCCEEDED, 100_000), refund("re_1", 10_000, currency="USD"))
        assert ledger.refunded_minor == 0 and ledger.conflicts


class TestDisputes:
    def test_open_then_lost(self):
        opened = Fact(K.DISPUTE, D.OPEN, 100_000, key="dp_1")
        assert fold(charge(S.SUCCEEDED, 100_000), opened).status == S.DISPUTED
        lost = fold(charge(S.SUCCEEDED, 100_000), opened, Fact(K.DISPUTE, D.LOST, 100_000, key="dp_1"))
        assert (lost.status, lost.charged_back_minor, lost.net_minor) == (S.CHARGED_BACK, 100_000, 0)

    def test_won_is_back_to_succeeded(self):
        won = fold(charge(S.SUCCEEDED, 100_000), Fact(K.DISPUTE, D.OPEN, 100_000, key="dp_1"),
                   Fact(K.DISPUTE, D.WON, 100_000, key="dp_1"))  # fmt: skip
        assert (won.status, won.net_minor) == (S.SUCCEEDED, 100_000)


# --- Any order gives the same answer ----------------------------------------------------------------

CHARGE_STATES = [S.PENDING, S.PROCESSING, S.FAILED, S.CANCELLED, S.EXPIRED, S.SUCCEEDED]
facts = st.one_of(
    st.builds(charge, st.sampled_from(CHARGE_STATES), st.sampled_from([50_000, 60_000])),
    st.builds(refund, st.sampled_from(["re_1", "re_2", "event:e9"]), st.sampled_from([10_000, 20_000]),
              st.sampled_from(list(R))),  # fmt: skip
    st.builds(Fact, st.just(K.REFUNDED_TOTAL), amount_minor=st.sampled_from([10_000, 30_000]),
              occurred_at=st.sampled_from([T0, T0 + timedelta(hours=1)])),  # fmt: skip
    st.builds(Fact, st.just(K.DISPUTE), st.sampled_from(list(D)), st.sampled_from([5_000, 60_000]), key=st.just("dp_1")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(facts, max_size=8), st.randoms(use_true_random=False))
def test_the_fold_depends_on_the_set_of_facts_not_their_order(chosen, random):
    shuffled = list(chosen)
    random.shuffle(shuffled)
    first, second = fold(*chosen), fold(*shuffled)
    assert first == second
    # Redelivered facts change nothing either.
    assert fold(*chosen, *chosen) == first
    # What the books must show always adds up to what the school keeps, and never goes below zero.
    assert first.net_minor == first.received_minor - first.refunded_minor - first.charged_back_minor >= 0
