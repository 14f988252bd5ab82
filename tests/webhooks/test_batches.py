"""A worker's message of events applied in one transaction (``webhooks.batches``): the same
payments, facts, audit entries, outbox events and results as one event at a time, in any order,
for a fraction of the statements; a failure rolls the message back and each event gets its own go."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import TestCase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.models import AuditLog, OutboxEvent, Payment, ProviderStudentLink, WebhookEvent
from providers import registry
from tests.conftest import sign, surepay_body
from tests.factories import AccountFactory
from tests.webhooks.test_confirmation import UnsignedProvider
from webhooks import batches, services

EventStatus = WebhookEvent.Status


def fell_back(caplog) -> bool:
    """Whether a message was rolled back and its events processed one at a time."""
    return any(record.name == "webhooks.batches" and "one by one" in record.getMessage() for record in caplog.records)


@pytest.fixture(autouse=True)
def applied_together(request, caplog):
    """Every message here is applied in one transaction, unless the test says otherwise."""
    yield
    if "falls_back" not in request.keywords:
        assert not fell_back(caplog)


def store(body: bytes) -> int:
    """Store a signed SurePay delivery as the request path does, without publishing it."""
    receipt = services.webhook_receive(
        provider_slug="surepay", school_code="ng", body=body, headers={"X-Signature": sign(body)}, remote_addr="127.0.0.1"
    )
    assert receipt.created
    return WebhookEvent.objects.values_list("pk", flat=True).get(external_event_id=receipt.event_id)


def run_message(event_ids: list[int]) -> dict:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return batches.webhook_events_process(events=[(event_id, None) for event_id in event_ids])


def run_one_by_one(event_ids: list[int]) -> dict:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return {event_id: services.webhook_event_run(event_id=event_id) for event_id in event_ids}


def what_staff_see() -> dict:
    """Everything a bursar or an events consumer would look at, by the provider's ids (payment
    ids are new uuids on every run). A new student is looked up after the message's events are
    applied, not between two of them: its ``payment.mapped`` event may come before or after the
    payment's next change, which the ``events`` of its payment keep in order."""
    payments = {}
    for payment in Payment.objects.select_related("student"):
        key = f"payment:{payment.pk}"
        outbox = list(OutboxEvent.objects.filter(key=key).order_by("pk").values_list("event_type", flat=True))
        payments[payment.external_txn_id] = {
            "state": (
                payment.status, payment.amount_minor, payment.currency, payment.refunded_amount_minor,
                payment.net_minor, payment.mapping_status, payment.student and payment.student.student_number,
                payment.ledger_conflict,
            ),
            "events": [event_type for event_type in outbox if event_type != "payment.mapped"],
            "mapped": outbox.count("payment.mapped"),
            "audit": Counter(AuditLog.objects.filter(target_id=str(payment.pk)).values_list("action", flat=True)),
        }  # fmt: skip
    events = {
        event.external_event_id: (event.status, event.result, event.attempts, event.applied_at is not None,
                                  event.payment and event.payment.external_txn_id)
        for event in WebhookEvent.objects.select_related("payment")
    }  # fmt: skip
    links = set(ProviderStudentLink.objects.values_list("provider_student_id", "student__student_number"))
    return {"payments": payments, "events": events, "links": links}


STATUSES = ["SUCCEEDED", "PENDING", "FAILED", "REVERSED"]


@st.composite
def messages(draw):
    """Events of up to three transactions, interleaved in any order in one message: successes,
    pendings, failures, reversals (refunds, which may come before their charge), the same status
    twice under two event ids; students known or new to the directory."""
    bodies = []
    for txn in range(draw(st.integers(1, 3))):
        student = draw(st.sampled_from(["prov-001", "prov-002", "prov-999"]))
        for status in draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=4)):
            amount = "40,000" if status == "REVERSED" else "100,000"
            bodies.append(dict(external_txn_id=f"t{txn}", status=status, amount=amount, provider_student_id=student))
    order = draw(st.permutations(range(len(bodies))))
    return [surepay_body(event_id=f"e{n}", **bodies[index]) for n, index in enumerate(order)]


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=messages())
def test_a_message_applied_together_ends_as_one_event_at_a_time(account, fake_directory, message):
    with transaction.atomic():
        # prov-001 was paid for before: its mapping is known.
        run_one_by_one([store(surepay_body(event_id="before", external_txn_id="before"))])
        event_ids = [store(body) for body in message]
        with transaction.atomic():
            expected_results = run_one_by_one(event_ids)
            expected = what_staff_see()
            transaction.set_rollback(True)
        assert run_message(event_ids) == expected_results
        assert what_staff_see() == expected
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_message_of_known_students_costs_a_few_statements_an_event(account, fake_directory, django_assert_max_num_queries):
    run_one_by_one([store(surepay_body(event_id="before", external_txn_id="before"))])
    event_ids = [store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n}")) for n in range(20)]
    # The claim, the locks, three look-ups, the audit entries, the outbox rows, the marks, the
    # books' one query after commit: once each (and the savepoint pair of the test's own
    # transaction). Each event: its payment, its fact, and (a school with fewer than 500 payments) the
    # risk rule's usual amount, which a busy school reads once a minute.
    with django_assert_max_num_queries(11 + 3 * 20):
        results = run_message(event_ids)
    assert set(results.values()) == {"new -> succeeded; student mapped"}
    assert len(fake_directory.lookups()) == 1  # the one before: the rest were known
    for event in WebhookEvent.objects.filter(pk__in=event_ids).select_related("payment__student"):
        assert (event.status, event.attempts, event.applied_at, event.processed_at is not None) == (
            EventStatus.PROCESSED, 1, event.processed_at, True,
        )  # fmt: skip
        payment = event.payment
        assert (payment.status, payment.amount_minor, payment.currency, payment.student.student_number) == (
            "succeeded", 100_000, "UGX", "STU-0001",
        )  # fmt: skip
        assert list(OutboxEvent.objects.filter(key=f"payment:{payment.pk}").order_by("pk").values_list("event_type", flat=True)) == [
            "payment.created", "payment.succeeded", "payment.mapped"
        ]  # fmt: skip
        assert Counter(AuditLog.objects.filter(target_id=str(payment.pk)).values_list("action", "details__source")) == {
            ("payment.webhook", None): 1, ("payment.mapped", "cache"): 1,
        }  # fmt: skip


@pytest.mark.django_db
@pytest.mark.falls_back
def test_a_failure_in_a_message_leaves_the_others_applied_and_that_event_retried(account, fake_directory, monkeypatch, caplog):
    event_ids = [store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n}")) for n in range(5)]
    real_apply = services.payment_event_apply

    def fails_for_e3(**kwargs):
        change = real_apply(**kwargs)  # written, then the transaction fails
        if kwargs["event"].event_id == "e3":
            raise RuntimeError("database went away")
        return change

    monkeypatch.setattr(batches, "payment_event_apply", fails_for_e3)
    monkeypatch.setattr(services, "payment_event_apply", fails_for_e3)
    results = run_message(event_ids)
    assert fell_back(caplog)
    assert [results[event_id] for event_id in event_ids] == ["new -> succeeded; student mapped"] * 3 + ["retrying"] + [
        "new -> succeeded; student mapped"
    ]
    failed = WebhookEvent.objects.get(external_event_id="e3")
    assert (failed.status, failed.attempts, failed.applied_at, failed.last_error) == (
        EventStatus.PENDING, 1, None, "database went away",
    )  # fmt: skip
    assert sorted(Payment.objects.values_list("external_txn_id", flat=True)) == ["t0", "t1", "t2", "t4"]
    assert AuditLog.objects.filter(action="payment.webhook").count() == 4
    assert set(WebhookEvent.objects.exclude(pk=failed.pk).values_list("status", "attempts")) == {(EventStatus.PROCESSED, 1)}
    # Its retry, in a later message, applies it once.
    monkeypatch.setattr(batches, "payment_event_apply", real_apply)
    monkeypatch.setattr(services, "payment_event_apply", real_apply)
    WebhookEvent.objects.filter(pk=failed.pk).update(next_attempt_at=None)
    assert run_message([failed.pk, event_ids[0]]) == {failed.pk: "new -> succeeded; student mapped", event_ids[0]: None}
    assert Payment.objects.get(external_txn_id="t3").amount_minor == 100_000


@pytest.mark.django_db
def test_an_event_applied_before_a_crash_is_not_applied_again_in_a_message(account, fake_directory):
    event_ids = [store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n}", provider_student_id="prov-002")) for n in range(3)]
    run_message(event_ids[:1])
    # A worker died after applying e1 and before its student was mapped; its claim went stale.
    WebhookEvent.objects.filter(pk=event_ids[0]).update(
        status=EventStatus.PROCESSING, claimed_at=WebhookEvent.objects.get(pk=event_ids[0]).received_at - timedelta(hours=1)
    )
    results = run_message(event_ids)
    assert results[event_ids[0]] == "applied before; student mapped"
    assert AuditLog.objects.filter(action="payment.webhook").count() == 3
    assert Payment.objects.filter(student__student_number="STU-0002").count() == 3


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_overlapping_messages_apply_each_event_once(account, fake_directory):
    """The sweep re-published events a worker is applying; other events of the same transactions
    are in both messages, in opposite orders. Each event is applied once, each transaction has one
    payment, whichever worker wins."""
    event_ids = []
    for n in range(12):
        status = "SUCCEEDED" if n % 3 else "PENDING"
        event_ids.append(store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n % 4}", status=status)))
    messages = [event_ids, list(reversed(event_ids)), event_ids[3:9]]
    barrier = threading.Barrier(len(messages))
    results = [None] * len(messages)

    def work(index):
        barrier.wait()
        try:
            results[index] = batches.webhook_events_process(events=[(event_id, None) for event_id in messages[index]])
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    applied = Counter(event_id for result in results for event_id, outcome in result.items() if outcome and "applied before" not in outcome)
    assert applied == Counter(event_ids)
    assert sorted(Payment.objects.values_list("external_txn_id", "status")) == [(f"t{n}", "succeeded") for n in range(4)]
    assert AuditLog.objects.filter(action="payment.webhook").count() == 12
    assert set(WebhookEvent.objects.values_list("status", "attempts")) <= {(EventStatus.PROCESSED, 1), (EventStatus.PROCESSED, 2)}


# --- Students new to us: asked of the School Directory before the message's transaction ---------


def mapped_sources() -> Counter:
    return Counter(AuditLog.objects.filter(action="payment.mapped").values_list("details__source", flat=True))


@pytest.mark.django_db
def test_a_messages_new_students_are_looked_up_first_and_mapped_with_their_payments(account, fake_directory):
    students = ["prov-002", "prov-003", "prov-002", "prov-999"]
    event_ids = [
        store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n}", provider_student_id=student))
        for n, student in enumerate(students)
    ]
    results = run_message(event_ids)
    assert [results[event_id] for event_id in event_ids] == ["new -> succeeded; student mapped"] * 3 + [
        "new -> succeeded; student unmatched"
    ]
    mapped = WebhookEvent.objects.filter(pk__in=event_ids[:3])
    # Mapped in the transaction that applied them: processed by the same statement.
    assert all(event.processed_at == event.applied_at for event in mapped)
    assert sorted(Payment.objects.values_list("external_txn_id", "mapping_status", "student__student_number")) == [
        ("t0", "mapped", "STU-0002"), ("t1", "mapped", "STU-0003"), ("t2", "mapped", "STU-0002"), ("t3", "unmatched", None),
    ]  # fmt: skip
    assert mapped_sources() == {"directory": 3}
    # One look-up per new student; the one the directory does not know is asked again by its
    # payment's own mapping, which records it unmatched.
    asked = Counter(request.query["provider_student_id"][0] for request in fake_directory.lookups())
    assert asked == {"prov-002": 1, "prov-003": 1, "prov-999": 2}


@pytest.mark.django_db
def test_a_directory_down_before_a_message_leaves_its_students_to_their_own_mapping(account, fake_directory):
    fake_directory.fail_next(1, status=503)
    event_ids = [store(surepay_body(event_id=f"e{n}", external_txn_id=f"t{n}", provider_student_id=f"prov-00{n + 2}")) for n in range(2)]
    results = run_message(event_ids)
    assert [results[event_id] for event_id in event_ids] == ["new -> succeeded; student mapped"] * 2
    # The first look-up failed and no other was tried before the transaction: each payment was
    # mapped after it, on its own.
    assert len(fake_directory.lookups()) == 3
    assert all(event.processed_at > event.applied_at for event in WebhookEvent.objects.filter(pk__in=event_ids))
    assert mapped_sources() == {"directory": 2}


class UnsignedWithStudent(UnsignedProvider):
    def parse(self, *, payload, headers, account):
        event = super().parse(payload=payload, headers=headers, account=account)
        return dataclasses.replace(event, provider_student_id=payload["student"])


@pytest.mark.django_db
def test_a_refund_alone_or_an_unconfirmed_body_sends_no_one_to_the_directory(client, account, fake_directory, monkeypatch):
    monkeypatch.setitem(registry.PROVIDERS, "unsigned", f"{__name__}.UnsignedWithStudent")
    registry._load.cache_clear()
    AccountFactory(school=account.school, provider="unsigned")
    body = json.dumps({"id": "cb-1", "txn": "t-1", "amount": 150_000, "status": "succeeded", "student": "prov-003"})
    assert client.post("/api/webhooks/unsigned/ng", data=body, content_type="application/json").status_code == 202
    unconfirmed = WebhookEvent.objects.get(external_event_id="cb-1").pk
    waiting = store(surepay_body(event_id="e0", external_txn_id="t0", status="REVERSED", amount="40,000", provider_student_id="prov-002"))
    try:
        learnt, _ = batches._students_learn([unconfirmed, waiting])
        assert learnt == set()
    finally:
        registry._load.cache_clear()
    assert fake_directory.lookups() == []
    assert not ProviderStudentLink.objects.exists()
