"""The transactional outbox and its relay: every payment change and stored webhook event writes
its event in the same transaction; the relay publishes committed events in order, at least
once, keeps them while a sink is down; the events match the schemas of docs/events.md."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import jsonschema
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, connections, transaction

from events.envelope import envelope_of
from events.relay import Relay, relay_lock, relay_run
from events.sinks import Sink, SinkUnavailable
from payments.models import OutboxEvent, Payment
from payments.outbox import EVENT_VERSIONS
from payments.services import payment_student_assign
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.events.conftest import apply_event

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


class Recording(Sink):
    name = "recording"

    def __init__(self, fail: int = 0):
        self.batches: list[list] = []
        self.fail = fail

    def publish(self, events):
        if self.fail:
            self.fail -= 1
            raise SinkUnavailable("recording: down")
        self.batches.append(events)

    @property
    def types(self) -> list[str]:
        return [event.event_type for batch in self.batches for event in batch]


def schemas() -> dict[str, dict]:
    text = DOCS.read_text()
    found = re.findall(r"<!-- schema: ([\w.]+) -->\s*```json\n(.*?)```", text, re.S)
    return {name: json.loads(body) for name, body in found}


def validate(row: OutboxEvent) -> None:
    document = envelope_of(row).document
    known = schemas()
    jsonschema.validate(document, known["envelope"], format_checker=jsonschema.FormatChecker())
    name = "payment" if row.event_type.startswith("payment.") else row.event_type
    jsonschema.validate(document["data"], known[name], format_checker=jsonschema.FormatChecker())


def types() -> list[str]:
    return list(OutboxEvent.objects.order_by("id").values_list("event_type", flat=True))


def test_every_event_type_is_documented_with_its_version():
    text = DOCS.read_text()
    for event_type in EVENT_VERSIONS:
        assert f"`{event_type}`" in text, event_type
    assert set(schemas()) == {"envelope", "payment", "webhook.received", "webhook.dead_lettered", "webhook.failed"}


def test_a_payments_life_is_told_in_order(account):
    apply_event(account, event_id="e1", txn="t1", status="pending")
    apply_event(account, event_id="e2", txn="t1", status="succeeded")
    apply_event(account, event_id="e3", txn="t1", refunds=[("r1", 30_000)])
    apply_event(account, event_id="e4", txn="t1", disputes=[("d1", 70_000, "open")])
    apply_event(account, event_id="e5", txn="t1", disputes=[("d1", 70_000, "lost")])
    apply_event(account, event_id="e5-again", txn="t1", disputes=[("d1", 70_000, "lost")])  # changes nothing
    assert types() == [
        "payment.created", "payment.succeeded", "payment.refunded", "payment.disputed",
        "payment.disputed", "payment.charged_back",
    ]  # fmt: skip
    payment = Payment.objects.get()
    rows = list(OutboxEvent.objects.order_by("id"))
    assert {row.key for row in rows} == {f"payment:{payment.pk}"}
    assert {row.school_id for row in rows} == {account.school_id}
    refunded = rows[2].payload
    assert (refunded["refunded_minor"], refunded["previous"]["refunded_minor"], refunded["status"]) == (
        30_000, 0, "partially_refunded")  # fmt: skip
    assert rows[-1].payload["charged_back_minor"] == 70_000 and rows[-1].payload["net_minor"] == 0
    for row in rows:
        validate(row)


def test_a_change_that_rolls_back_leaves_no_event(account):
    with pytest.raises(RuntimeError), transaction.atomic():
        apply_event(account, event_id="e1", txn="t1")
        raise RuntimeError("the transaction fails after the change")
    assert not OutboxEvent.objects.exists() and not Payment.objects.exists()


def test_a_webhook_is_received_processed_and_mapped(client, account, fake_directory):
    fake_directory.add_student("ng", "surepay", "prov-001", "STU-1", "Amina N.")
    body = surepay_body()
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    assert types() == ["webhook.received"]
    process_pending()
    assert types() == ["webhook.received", "payment.created", "payment.succeeded", "payment.mapped"]
    received, *_, mapped = OutboxEvent.objects.order_by("id")
    assert received.payload["provider_event_id"] == "evt-001" and received.payload["confirmed_by_signature"]
    assert mapped.payload["student_number"] == "STU-1" and mapped.payload["source"] == "directory"
    for row in OutboxEvent.objects.all():
        validate(row)


def test_staff_mapping_by_hand_is_an_event(account):
    apply_event(account, event_id="e1", txn="t1")
    payment = Payment.objects.get()
    payment_student_assign(payment_id=payment.pk, student_number="STU-9", full_name="Kato J.", actor=get_user_model().objects.create_user("bursar"))
    mapped = OutboxEvent.objects.get(event_type="payment.mapped")
    assert mapped.payload["source"] == "staff" and mapped.payload["student_number"] == "STU-9"
    validate(mapped)


def test_a_dead_letter_is_an_event(client, account):
    body = b'{"event_id": "evt-bad", "amount": "lots"}'
    assert post_webhook(client, body, signature=sign(body)).status_code == 400
    (row,) = OutboxEvent.objects.all()
    assert row.event_type == "webhook.dead_lettered" and row.payload["errors"]
    validate(row)
    assert post_webhook(client, body, signature=sign(body)).status_code == 400  # the same body again
    assert OutboxEvent.objects.count() == 1


def test_an_event_that_gives_up_is_an_event(client, account):
    from webhooks.services import webhook_event_fail

    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    event_id = OutboxEvent.objects.get().payload["webhook_event_id"]
    webhook_event_fail(event_id=event_id, error="boom")
    row = OutboxEvent.objects.get(event_type="webhook.failed")
    assert row.payload["error"] == "boom"
    validate(row)


def test_the_relay_publishes_in_order_and_marks_published(client, account):
    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    apply_event(account, event_id="e1", txn="t1")
    sink = Recording()
    relay = Relay(sinks=[sink], batch_size=2)
    assert relay.publish_batch() == 2 and relay.publish_batch() == 1 and relay.publish_batch() == 0
    assert sink.types == ["webhook.received", "payment.created", "payment.succeeded"]
    assert [len(batch) for batch in sink.batches] == [2, 1]
    assert sink.batches[0][0].document["data"]["body"] == json.loads(body)
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_without_the_body_setting_the_body_is_not_published(client, account, settings):
    settings.EVENTS_WEBHOOK_BODY = False
    body = surepay_body()
    post_webhook(client, body, signature=sign(body))
    sink = Recording()
    Relay(sinks=[sink]).publish_batch()
    assert "body" not in sink.batches[0][0].document["data"]


def test_a_sink_down_keeps_the_batch_and_backs_off(account):
    apply_event(account, event_id="e1", txn="t1")
    sink = Recording(fail=2)
    relay = Relay(sinks=[sink])
    for _ in range(2):
        with pytest.raises(SinkUnavailable):
            relay.publish_batch()
    head = OutboxEvent.objects.order_by("id").first()
    assert (head.publish_attempts, head.last_error) == (2, "recording: down")
    assert 1.0 <= relay.backoff() <= 2.0
    apply_event(account, event_id="e2", txn="t1", refunds=[("r", 1)])
    assert relay.publish_batch() == 3
    assert sink.types == ["payment.created", "payment.succeeded", "payment.refunded"]
    assert relay.failures == 0


def test_the_relay_loop_runs_once_through_the_command(account, capsys):
    apply_event(account, event_id="e1", txn="t1")
    call_command("outbox_relay", "--once")
    assert "published 2 events" in capsys.readouterr().out
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_the_loop_returns_when_a_sink_is_down_in_once_mode(account):
    apply_event(account, event_id="e1", txn="t1")
    relay = relay_run(relay=Relay(sinks=[Recording(fail=1)]), once=True)
    assert relay.published == 0 and OutboxEvent.objects.filter(published_at__isnull=True).count() == 2


@pytest.mark.django_db(transaction=True)
def test_uncommitted_events_wait_and_a_late_commit_is_not_skipped(account):
    """A transaction that took its ids first but commits last is still published: the relay
    reads what is unpublished, not past a high-water mark."""
    started, finish = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                apply_event(account, event_id="slow", txn="t-slow")
                started.set()
                finish.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert started.wait(10)
    apply_event(account, event_id="fast", txn="t-fast")
    sink = Recording()
    relay = Relay(sinks=[sink])
    assert relay.publish_batch() == 2  # only the committed transaction's events
    finish.set()
    writer.join(10)
    assert relay.publish_batch() == 2
    slow_first = [e.document["data"]["external_txn_id"] for e in sink.batches[1]]
    assert slow_first == ["t-slow", "t-slow"]
    assert min(e.outbox_id for e in sink.batches[1]) < min(e.outbox_id for e in sink.batches[0])


@pytest.mark.django_db(transaction=True)
def test_one_relay_at_a_time():
    assert relay_lock() and relay_lock()  # held, and taken once
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [0x6F7574626F78])
            assert cursor.fetchone()[0] is False
    finally:
        other.close()
    connection.close()  # the lock goes with the session
    assert relay_lock()
    connection.close()


def test_published_events_are_deleted_after_the_retention(account, settings):
    from datetime import timedelta

    from django.utils import timezone

    apply_event(account, event_id="e1", txn="t1")
    relay = Relay(sinks=[Recording()])
    relay.publish_batch()
    OutboxEvent.objects.filter(event_type="payment.created").update(
        published_at=timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS, minutes=1)
    )
    apply_event(account, event_id="e2", txn="t1", refunds=[("r", 1)])  # not published yet: kept
    assert relay.clean() == 1
    assert relay.clean() == 0  # at most hourly
    assert types() == ["payment.succeeded", "payment.refunded"]
