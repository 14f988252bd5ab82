"""The ledger's promise, as a property: one transaction's events, delivered in any order, some of
them twice, some left to the sweep (the broker was down), some applied again after a worker died,
with the books synced at any moment in between, settle to the same payment and the same books.

Each example is a new transaction of its own (new ids), delivered through the real endpoint and
processed by the worker's own entry point; the payment is checked against what the provider
reported, and its QuickBooks documents against the payment. ``LEDGER_EXAMPLES`` raises the number
of examples (``make test-ledger-long``)."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.test import TestCase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.money import from_minor, to_minor
from core.status import PaymentStatus as S
from payments import selectors
from payments.models import Payment, WebhookEvent
from providers.flutterwave.fake import FakeFlutterwave
from providers.flutterwave.wire import flutterwave_delivery, flutterwave_event
from providers.paystack.wire import paystack_delivery, paystack_event
from providers.stripe.wire import stripe_delivery, stripe_event
from providers.wire import Delivery, Params
from quickbooks_sync import services as books
from tests.conftest import process_pending, sign
from tests.ledger.conftest import STUDENT_ID, provider_account
from tests.providers.helpers import fake_server, post
from webhooks.services import webhook_event_run

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("LEDGER_EXAMPLES", "12"))
property_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_ids = itertools.count(1)


@dataclass
class Expected:
    """What the provider says happened: the payment the ledger must show."""

    status: str | None  # None: no payment at all
    received: int = 0
    refunded: int = 0
    # The money movements the books must hold, as (document kind, amount): one each.
    documents: list[tuple[str, int]] = field(default_factory=list)
    # Reports that cannot all be true (refunds beyond the payment): the payment says so, and the
    # books' total still follows it, though their documents then depend on when they synced.
    conflict: bool = False
    charged_back: int = 0


@dataclass
class Plan:
    """How the deliveries go: their order, what is delivered again, what waits for the sweep,
    what a dying worker applies twice, when the books sync."""

    order: list[int]
    again: list[int]
    deferred: list[bool]
    reapplied: list[bool]
    synced: list[bool]


def plans(count: int) -> st.SearchStrategy[Plan]:
    n = count
    return st.builds(
        Plan,
        order=st.permutations(range(n)),
        again=st.lists(st.integers(0, n - 1), max_size=2),
        deferred=st.lists(st.booleans(), min_size=n + 2, max_size=n + 2),
        reapplied=st.lists(st.booleans(), min_size=n + 2, max_size=n + 2),
        synced=st.lists(st.booleans(), min_size=n + 2, max_size=n + 2),
    )


def run_worker(event_pk: int) -> None:
    with TestCase.captureOnCommitCallbacks(execute=True):
        webhook_event_run(event_id=event_pk)


def books_sync(school_id: int) -> None:
    books.qbo_backlog_scan()
    books.qbo_school_sync(school_id=school_id)


def deliver(client, provider: str, school, deliveries: list[Delivery], plan: Plan, before_delivery=None) -> None:
    schedule = list(plan.order)
    for position, index in zip([1, len(schedule)], plan.again):
        schedule.insert(min(position, len(schedule)), index)
    for step, index in enumerate(schedule):
        if before_delivery is not None:
            before_delivery(index)
        response = post(client, provider, deliveries[index], school=school.code)
        assert response.status_code in (200, 202), response.content
        event = WebhookEvent.objects.get(account__school=school, external_event_id=response.json()["event_id"])
        if not plan.deferred[step]:
            run_worker(event.pk)
        if plan.reapplied[step] and event.applied_at is not None:
            # A worker died after applying the event, before marking it processed: taken over.
            WebhookEvent.objects.filter(pk=event.pk).update(status=WebhookEvent.Status.PENDING)
            run_worker(event.pk)
        if plan.synced[step]:
            books_sync(school.pk)
    with TestCase.captureOnCommitCallbacks(execute=True):
        process_pending()  # what the sweep does for events the broker never delivered
    books_sync(school.pk)


def documents_of(fake_qbo, realm: str, payment: Payment) -> list[tuple[str, int]]:
    """The payment's documents in QuickBooks (recognised by our marker), amounts in minor units."""
    marker = f"[sp:{payment.pk}"
    found = []
    for entity in ("Payment", "SalesReceipt", "RefundReceipt"):
        found += [
            (entity, to_minor(Decimal(str(doc["TotalAmt"])), payment.currency))
            for doc in fake_qbo.objects(realm, entity)
            if marker in str(doc.get("PrivateNote") or "")
        ]
    return sorted(found)


def check(payment: Payment | None, expected: Expected, fake_qbo, realm: str) -> None:
    if expected.status is None:
        assert payment is None
        return
    assert payment is not None
    assert (payment.status, payment.refunded_amount_minor) == (expected.status, expected.refunded)
    if expected.received:
        assert payment.amount_minor == expected.received
    assert payment.net_minor == expected.received - expected.refunded
    documents = documents_of(fake_qbo, realm, payment)
    books_net = sum(amount if kind != "RefundReceipt" else -amount for kind, amount in documents)
    assert books_net == payment.net_minor
    assert bool(payment.ledger_conflict) == expected.conflict
    if not expected.conflict:
        assert documents == sorted(expected.documents)
        # The payment's own ledger names one movement per document.
        assert len(selectors.payment_ledger(payment=payment).movements) == len(documents)


def the_payment(account, txn_id: str) -> Payment | None:
    return Payment.objects.filter(account=account, external_txn_id=txn_id).first()


# --- SurePay: SUCCEEDED / FAILED / PENDING / REVERSED (a reversal is its own amount) ------------------


@st.composite
def surepay_stories(draw):
    amount = draw(st.sampled_from([60_000, 1_200_000, 4_500_050]))
    successes = draw(st.integers(0, 2))
    failed, pending = draw(st.booleans()), draw(st.booleans())
    reversals = draw(st.lists(st.sampled_from([amount // 3, amount // 2, amount]), max_size=3))
    events = [("SUCCEEDED", amount)] * successes + [("FAILED", amount)] * failed + [("PENDING", amount)] * pending
    events += [("REVERSED", reversal) for reversal in reversals]
    if not events:
        events, successes = [("SUCCEEDED", amount)], 1
    if successes:
        refunded = min(amount, sum(reversals))
        status = S.REFUNDED if refunded == amount else S.PARTIALLY_REFUNDED if refunded else S.SUCCEEDED
        # Each reversal is a money movement of its own.
        documents = [("SalesReceipt", amount)] + [("RefundReceipt", reversal) for reversal in reversals]
        expected = Expected(status, amount, refunded, documents, conflict=sum(reversals) > amount)
    elif failed or pending:
        # Reversals of a payment the provider says failed cannot all be true.
        expected = Expected(S.FAILED if failed else S.PENDING, conflict=failed and bool(reversals))
    else:
        expected = Expected(None)  # only reversals: they wait for a payment that never comes
    return events, expected, draw(plans(len(events)))


@property_settings
@given(story=surepay_stories())
def test_surepay_any_order(client, books, fake_qbo, story):
    events, expected, plan = story
    ledger = books("ke", "KES")
    account = provider_account(ledger, "surepay", webhook_secret="sekret")
    txn = f"sp-{next(_ids)}"
    deliveries = []
    for number, (status, amount) in enumerate(events):
        body = (
            f'{{"event_id": "{txn}-e{number}", "external_txn_id": "{txn}", "amount": "{from_minor(amount, "KES"):,}", '
            f'"currency": "KES", "status": "{status}", "provider_student_id": "{STUDENT_ID}"}}'
        ).encode()
        deliveries.append(Delivery(body, {"X-Signature": sign(body)}))
    deliver(client, "surepay", ledger.school, deliveries, plan)
    check(the_payment(account, txn), expected, fake_qbo, ledger.realm)


# --- Stripe: PaymentIntent events and cumulative refunded totals, ordered by Stripe's clock ----------


@st.composite
def stripe_stories(draw):
    amount = draw(st.sampled_from([15_000, 250_000]))
    totals = sorted(set(draw(st.lists(st.sampled_from([amount // 4, amount // 2, amount]), max_size=3))))
    failed_first = draw(st.booleans())
    events = [("payment_intent.succeeded", amount, 0, 10)]
    if failed_first:
        events.append(("payment_intent.payment_failed", amount, 0, 5))
    events += [("charge.refunded", amount, total, 20 + step) for step, total in enumerate(totals)]
    refunded = totals[-1] if totals else 0
    status = S.REFUNDED if refunded == amount else S.PARTIALLY_REFUNDED if refunded else S.SUCCEEDED
    # A cumulative total names no refund: each rise the books saw is a refund document of its own,
    # so the documents depend on when the books synced; their sum never does.
    return events, Expected(status, amount, refunded), draw(plans(len(events)))


@property_settings
@given(story=stripe_stories())
def test_stripe_any_order(client, books, fake_qbo, story):
    events, expected, plan = story
    ledger = books("us", "USD")
    account = provider_account(ledger, "stripe", webhook_secret="whsec_test", api_key="sk_test_fake", test_mode=True)
    txn = f"pi_{next(_ids):06d}"
    now = int(time.time())
    deliveries = []
    for number, (kind, amount, refunded, offset) in enumerate(events):
        payload = stripe_event(
            kind,
            Params(amount_minor=amount, currency="USD", txn_id=txn, refunded_minor=refunded, student_id=STUDENT_ID,
                   reference=f"ref-{txn}", event_id=f"evt_{txn}_{number}"),
        )  # fmt: skip
        payload["created"] = now - 60 + offset
        payload["data"]["object"]["id"] = txn if kind.startswith("payment_intent") else f"ch_{txn}"
        deliveries.append(stripe_delivery(payload, ["whsec_test"]))
    deliver(client, "stripe", ledger.school, deliveries, plan)
    payment = the_payment(account, txn)
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor) == (
        expected.status, expected.received, expected.refunded,
    )  # fmt: skip
    documents = documents_of(fake_qbo, ledger.realm, payment)
    assert sum(amount if kind != "RefundReceipt" else -amount for kind, amount in documents) == payment.net_minor
    assert [amount for kind, amount in documents if kind != "RefundReceipt"] == [expected.received]


# --- Paystack: charge.success with Paystack's own reference, refunds known only by that reference -----


@st.composite
def paystack_stories(draw):
    amount = draw(st.sampled_from([5_000_000, 1_234_500]))
    refunds = draw(st.lists(st.sampled_from([amount // 10, amount // 5]), max_size=3))
    announced = draw(st.booleans())  # refund.pending before its refund.processed
    events = [("charge.success", amount, "")]
    for number, refund in enumerate(refunds):
        if announced:
            events.append(("refund.pending", refund, ""))
        events.append(("refund.processed", refund, f"RR{number}"))
    refunded = sum(refunds)
    status = S.PARTIALLY_REFUNDED if refunded else S.SUCCEEDED
    documents = [("SalesReceipt", amount)] + [("RefundReceipt", refund) for refund in refunds]
    return events, Expected(status, amount, refunded, documents), draw(plans(len(events)))


@property_settings
@given(story=paystack_stories())
def test_paystack_any_order(client, books, fake_qbo, story):
    events, expected, plan = story
    ledger = books("ng", "NGN")
    account = provider_account(ledger, "paystack", webhook_secret="sk_test_paystack", api_key="sk_test_paystack",
                               test_mode=True)  # fmt: skip
    number = next(_ids)
    txn, reference = str(400_000_000 + number), f"T{number}_412829_paystack"
    deliveries = []
    for kind, amount, refund_reference in events:
        payload = paystack_event(kind, Params(amount_minor=amount, currency="NGN", txn_id=txn, reference=reference,
                                              student_id=STUDENT_ID, event_id=refund_reference))  # fmt: skip
        if kind.startswith("refund."):
            payload["data"]["amount"] = str(amount)
        deliveries.append(paystack_delivery(payload, "sk_test_paystack"))
    deliver(client, "paystack", ledger.school, deliveries, plan)
    check(the_payment(account, txn), expected, fake_qbo, ledger.realm)
    # The refunds belong to the payment: no second payment for them.
    assert Payment.objects.filter(account=account).filter(provider_reference=reference).count() == 1


# --- Flutterwave: bodies are not trusted; the verify API is the authority ----------------------------


@st.composite
def flutterwave_stories(draw):
    amount = draw(st.sampled_from([2_500_000, 1_000_050]))
    refunds = draw(st.lists(st.sampled_from([amount // 10, amount // 4]), max_size=2))
    pending_first = draw(st.booleans())
    # The provider's side, in its own order: (what changes at the API, the notification it sends).
    steps = ([("pending", None)] if pending_first else []) + [("successful", None)]
    steps += [("refund", refund) for refund in refunds]
    refunded = sum(refunds)
    status = S.PARTIALLY_REFUNDED if refunded else S.SUCCEEDED
    documents = [("SalesReceipt", amount)] + [("RefundReceipt", refund) for refund in refunds]
    return steps, Expected(status, amount, refunded, documents), draw(plans(len(steps)))


@pytest.fixture
def flutterwave_api(settings):
    with fake_server(FakeFlutterwave(secret_key="FLWSECK_TEST-fake"), settings, "FLUTTERWAVE_API_BASE_URL") as fake:
        yield fake


@property_settings
@given(story=flutterwave_stories())
def test_flutterwave_any_order(client, books, fake_qbo, flutterwave_api, story):
    steps, expected, plan = story
    ledger = books("ng", "NGN")
    account = provider_account(ledger, "flutterwave", webhook_secret="flw-secret-hash",
                               api_key="FLWSECK_TEST-fake", test_mode=True)  # fmt: skip
    number = next(_ids)
    txn, tx_ref = 700_000_000 + number, f"tx-flw-{number}"
    flutterwave_api.transactions[tx_ref] = {
        "id": txn, "tx_ref": tx_ref, "flw_ref": f"FLW-{number}", "amount": from_minor(expected.received, "NGN"),
        "currency": "NGN", "status": "pending", "processor_response": "Pending", "customer": {},
        "meta": {"student_id": STUDENT_ID},
    }  # fmt: skip
    deliveries = []
    for kind, refund in steps:
        params = Params(amount_minor=expected.received, currency="NGN", txn_id=str(txn), reference=tx_ref,
                        student_id=STUDENT_ID, refunded_minor=refund or 0)  # fmt: skip
        payload = flutterwave_event("refund" if kind == "refund" else "charge.completed", params)
        if kind == "pending":
            payload["data"]["status"] = "pending"
        deliveries.append(flutterwave_delivery(payload, "flw-secret-hash"))

    happened: set[int] = set()

    def provider_acts(index: int) -> None:
        """Before a notification is sent, what it reports has happened at the provider, and so
        has everything before it in the provider's own order."""
        for step in range(index + 1):
            if step in happened:
                continue
            happened.add(step)
            kind, refund = steps[step]
            if kind == "refund":
                flutterwave_api.refunds.append({
                    "id": txn * 10 + step, "tx_id": txn, "amount_refunded": from_minor(refund, "NGN"),
                    "status": "completed", "flw_ref": f"URF-{txn}-{step}",
                })  # fmt: skip
            elif kind == "successful":
                flutterwave_api.transactions[tx_ref]["status"] = "successful"

    deliver(client, "flutterwave", ledger.school, deliveries, plan, before_delivery=provider_acts)
    check(the_payment(account, str(txn)), expected, fake_qbo, ledger.realm)


# --- Stripe: refunds one by one (one may fail later) and a dispute, in Stripe's documented shapes -----


@st.composite
def stripe_money_back_stories(draw):
    amount = draw(st.sampled_from([100_000, 250_000]))
    refunds = draw(st.lists(st.tuples(st.sampled_from([amount // 10, amount // 5]), st.sampled_from([None, 5, 45])),
                            max_size=3))  # fmt: skip
    dispute = draw(st.sampled_from([None, "won", "lost", "open"]))
    # Stripe's own order of things, by its clock: the success, then each refund (pending,
    # succeeded, the charge's new cumulative total), a failure some time later for some of them
    # (Stripe takes a failed refund out of the amount_refunded it reports from then on), then the
    # dispute.
    timeline = [(0, "payment_intent.succeeded", {})]
    lifetimes = [(10 + n * 10, 11 + n * 10, None if fails is None else 11 + n * 10 + fails, refund)
                 for n, (refund, fails) in enumerate(refunds)]  # fmt: skip
    for number, (created, succeeded, failed, refund) in enumerate(lifetimes):
        key = f"re_{number}"
        timeline.append((created, "refund.created", {"key": key, "amount": refund, "status": "pending"}))
        timeline.append((succeeded, "refund.updated", {"key": key, "amount": refund, "status": "succeeded"}))
        total = sum(r for _, s, f, r in lifetimes if s <= succeeded and (f is None or f > succeeded))
        timeline.append((succeeded, "charge.refunded", {"total": total}))
        if failed is not None:
            timeline.append((failed, "refund.failed", {"key": key, "amount": refund, "status": "failed"}))
    if dispute:
        timeline.append((100, "charge.dispute.created", {"status": "needs_response"}))
        if dispute != "open":
            timeline.append((110, "charge.dispute.closed", {"status": dispute}))
    refunded = sum(refund for refund, fails in refunds if fails is None)
    charged_back = min(amount - refunded, amount) if dispute == "lost" else 0
    if dispute == "open":
        status = S.DISPUTED
    elif charged_back:
        status = S.CHARGED_BACK
    else:
        status = S.PARTIALLY_REFUNDED if refunded else S.SUCCEEDED
    expected = Expected(status, amount, refunded)
    expected.charged_back = charged_back
    return timeline, expected, draw(plans(len(timeline)))


def stripe_money_back_event(kind: str, data: dict, intent: str, amount: int, created: int) -> dict:
    charge = f"ch_{intent}"
    if kind == "payment_intent.succeeded":
        obj = {"id": intent, "object": "payment_intent", "amount": amount, "currency": "usd", "status": "succeeded",
               "latest_charge": charge, "metadata": {"reference": f"ref-{intent}", "student_id": STUDENT_ID}}  # fmt: skip
    elif kind == "charge.refunded":
        obj = {"id": charge, "object": "charge", "amount": amount, "amount_refunded": data["total"], "currency": "usd",
               "payment_intent": intent, "refunded": data["total"] == amount, "status": "succeeded"}  # fmt: skip
    elif kind.startswith("refund."):
        obj = {"id": f"{data['key']}_{intent}", "object": "refund", "amount": data["amount"], "currency": "usd",
               "status": data["status"], "charge": charge, "payment_intent": intent}  # fmt: skip
    else:
        obj = {"id": f"dp_{intent}", "object": "dispute", "amount": amount, "currency": "usd", "status": data["status"],
               "charge": charge, "payment_intent": intent}  # fmt: skip
    return {"id": f"evt_{intent}_{kind}_{created}", "object": "event", "api_version": "2024-10-28.acacia",
            "created": created, "livemode": False, "type": kind, "data": {"object": obj}}  # fmt: skip


@property_settings
@given(story=stripe_money_back_stories())
def test_stripe_refunds_and_disputes_any_order(client, books, fake_qbo, story):
    timeline, expected, plan = story
    ledger = books("us", "USD")
    account = provider_account(ledger, "stripe", webhook_secret="whsec_test", api_key="sk_test_fake", test_mode=True)
    intent = f"pi_mb_{next(_ids):06d}"
    start = int(time.time()) - 300
    deliveries = [
        stripe_delivery(stripe_money_back_event(kind, data, intent, expected.received, start + at), ["whsec_test"])
        for at, kind, data in timeline
    ]
    deliver(client, "stripe", ledger.school, deliveries, plan)
    payment = the_payment(account, intent)
    assert (payment.status, payment.amount_minor, payment.refunded_amount_minor, payment.charged_back_amount_minor) == (
        expected.status, expected.received, expected.refunded, expected.charged_back,
    )  # fmt: skip
    documents = documents_of(fake_qbo, ledger.realm, payment)
    assert sum(amount if kind != "RefundReceipt" else -amount for kind, amount in documents) == payment.net_minor
