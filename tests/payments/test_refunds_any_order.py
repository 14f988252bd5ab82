"""Staff refunds of a provider whose refund webhooks carry no refund id (Paystack), as a property:
whatever order the provider's answers and its webhooks arrive in (a webhook before the answer, while
the request is still on its way; several refunds of the same amount; webhooks delivered twice; some
never), every refund counts once, a pending one shows as pending, and each request ends in the
status of the refund it stands for.

The answers are recorded through the same service the refund API's answer goes through, at chosen
moments (an HTTP call cannot be paused half-way); the webhooks go through ``payment_event_apply``,
as the worker applies them. ``LEDGER_EXAMPLES`` raises the number of examples."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.status import PaymentStatus as S
from payments import selectors, services
from payments.ledger import FactKind
from payments.models import RefundRequest, TransactionFact
from payments.services import refunds
from providers.base import RefundResult
from tests.factories import AccountFactory, PaymentFactory, report
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("LEDGER_EXAMPLES", "25"))
_ids = itertools.count(1)


@pytest.fixture
def paystack_account(school):
    school.currency = "NGN"
    school.save()
    return AccountFactory(school=school, provider="paystack", webhook_secret="sk_test_anyorder", api_key="sk_test_anyorder", test_mode=True)


@st.composite
def histories(draw):
    """Refunds of one payment (amounts, what Paystack's webhook finally says of each, or nothing
    yet), and when each webhook arrives: after its request was made, anywhere later. Requests
    come one after another: a second refund is refused while one waits for its answer."""
    count = draw(st.integers(1, 3))
    amounts = draw(st.lists(st.sampled_from([50_000, 100_000]), min_size=count, max_size=count))
    outcomes = draw(st.lists(st.sampled_from(["succeeded", "failed", None]), min_size=count, max_size=count))
    chain = [step for i in range(count) for step in (("create", i), ("answer", i))]
    steps = list(chain)
    for i, outcome in enumerate(outcomes):
        if outcome is None:
            continue
        earliest = steps.index(("create", i)) + 1
        at = draw(st.integers(earliest, len(steps)))
        steps.insert(at, ("webhook", i))
        if draw(st.booleans()):  # delivered again later
            steps.insert(draw(st.integers(at + 1, len(steps))), ("webhook", i))
    return amounts, outcomes, steps


@given(history=histories())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_paystack_refunds_count_once_whatever_order_answers_and_webhooks_arrive_in(paystack_account, school, history):
    amounts, outcomes, steps = history
    n = next(_ids)
    staff = make_staff(f"bursar{n}", school)
    payment = PaymentFactory(account=paystack_account, external_txn_id=f"t{n}", reference=f"PANY{n:08d}",
                             amount_minor=300_000, currency="NGN")  # fmt: skip
    report(payment, status=S.SUCCEEDED)
    requests: dict[int, RefundRequest] = {}
    for step, i in steps:
        if step == "create":
            with mock.patch("payments.services.refund_request_send", side_effect=lambda refund_request_id: None):
                services.refund_request_create(payment_id=payment.pk, amount_minor=amounts[i], reason=f"r{i}", actor=staff)
            requests[i] = RefundRequest.objects.get(payment=payment, reason=f"r{i}")
        elif step == "answer":
            refunds._refund_answer_record(
                refund_request_id=requests[i].pk, result=RefundResult(f"{n}-{i}", "pending", amounts[i]), source_ref="refund answer"
            )
        else:
            report(payment, refunds=[(f"PROC-{n}-{i}", amounts[i], outcomes[i])])

    payment.refresh_from_db()
    succeeded = sum(a for a, o in zip(amounts, outcomes) if o == "succeeded")
    waiting = sum(a for a, o in zip(amounts, outcomes) if o is None)
    assert (payment.refunded_amount_minor, payment.refund_pending_amount_minor) == (succeeded, waiting)
    refund_movements = [m for m in selectors.payment_ledger(payment=payment).movements if m.key.startswith("refund:")]
    assert sorted(-m.amount_minor for m in refund_movements) == sorted(a for a, o in zip(amounts, outcomes) if o == "succeeded")
    # Which of two requests of the same amount gets which webhook cannot be known; per amount, the
    # requests end as the refunds did.
    expected = Counter((a, {"succeeded": "succeeded", "failed": "failed", None: "submitted"}[o]) for a, o in zip(amounts, outcomes))
    assert Counter(RefundRequest.objects.filter(payment=payment).values_list("amount_minor", "status")) == expected
    # Every request's key is the one that counts: its fact says what the request says.
    for request in RefundRequest.objects.filter(payment=payment):
        statuses = set(
            TransactionFact.objects.filter(payment=payment, kind=FactKind.REFUND, key=request.ledger_key)
            .exclude(source="system")
            .values_list("status", flat=True)
        )
        final = {"succeeded": {"succeeded"}, "failed": {"failed"}, "submitted": {"pending"}}[request.status]
        assert statuses & final, (request.status, request.ledger_key, statuses)
    # And what is left to refund is what the provider has not given back nor is giving back.
    left = 300_000 - succeeded - waiting
    assert selectors.payment_refund_balance(payment=payment).left_minor == left
