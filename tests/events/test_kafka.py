"""The Kafka sink against a real Kafka-protocol broker (Tansu): topics created through the admin
API, events produced keyed by their transaction, read back by a consumer group in order."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from events.envelope import Envelope
from events.relay import Relay
from events.sinks import SinkUnavailable
from events.sinks.endpoints import EndpointSink
from events.sinks.kafka import KafkaSink, topic_for
from payments.models import OutboxEvent
from tests.conftest import free_port, post_webhook, sign, surepay_body
from tests.events.conftest import Broker, apply_event, kafka_settings


def consume(bootstrap: str, topics: list[str], count: int, timeout: float = 20.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"tests-{uuid.uuid4()}", "auto.offset.reset": "earliest",
         "enable.auto.commit": True,
         # Tansu holds a new group's first join for the rebalance timeout (max.poll.interval.ms).
         "session.timeout.ms": 6000, "max.poll.interval.ms": 6000, "heartbeat.interval.ms": 500},
    )  # fmt: skip
    consumer.subscribe(topics)
    messages = []
    import time

    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append(message)
    finally:
        consumer.close()
    return messages


def _envelope(event_type: str, data: dict) -> Envelope:
    return Envelope(1, str(uuid.uuid4()), event_type, 1, None, "k", {"type": event_type, "data": data})


@pytest.mark.parametrize(
    ("provider", "event_type", "topic"),
    [
        ("stripe", "payment_intent.succeeded", "webhooks.stripe.payment_intent"),
        ("stripe", "charge.refunded", "webhooks.stripe.charge"),
        ("stripe", "refund.updated", "webhooks.stripe.refund"),
        ("mpesa", "", "webhooks.mpesa.event"),
        ("Odd Provider", "A/B.c", "webhooks.odd_provider.a_b"),
    ],
)
def test_a_provider_event_goes_to_its_provider_and_kind_topic(provider, event_type, topic):
    assert topic_for(_envelope("webhook.received", {"provider": provider, "event_type": event_type})) == topic


def test_dead_letters_and_payments_have_their_own_topics():
    assert topic_for(_envelope("webhook.dead_lettered", {"provider": "stripe"})) == "webhooks.dlq"
    assert topic_for(_envelope("webhook.failed", {"provider": "stripe"})) == "webhooks.dlq"
    assert topic_for(_envelope("payment.refunded", {})) == "payments.events"


def test_the_relay_publishes_to_tansu_in_order_keyed_by_transaction(tansu, settings, client, account):
    kafka_settings(settings, tansu.bootstrap)
    settings.KAFKA_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}."
    prefix = settings.KAFKA_TOPIC_PREFIX
    body = surepay_body(event_id="evt-kafka", external_txn_id="txn-k")
    assert post_webhook(client, body, signature=sign(body)).status_code == 202
    apply_event(account, event_id="e1", txn="txn-k")
    apply_event(account, event_id="e2", txn="txn-k", refunds=[("r1", 40_000)])
    apply_event(account, event_id="e3", txn="txn-k", refunds=[("r1", 40_000), ("r2", 60_000)])

    sink = KafkaSink.from_settings()
    relay = Relay(sinks=[sink, EndpointSink()])
    assert relay.publish_batch() == 5
    relay.close()
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()

    # The topics exist: created through the admin API.
    topics = set(AdminClient({"bootstrap.servers": tansu.bootstrap}).list_topics(timeout=10).topics)
    assert {f"{prefix}payments.events", f"{prefix}webhooks.surepay.payment"} <= topics

    payments = consume(tansu.bootstrap, [f"{prefix}payments.events"], 4)
    types = [json.loads(m.value())["type"] for m in payments]
    assert types == ["payment.created", "payment.succeeded", "payment.refunded", "payment.refunded"]
    assert len({m.key() for m in payments}) == 1 and len({m.partition() for m in payments}) == 1
    last = json.loads(payments[-1].value())
    assert last["data"]["refunded_minor"] == 100_000 and last["data"]["status"] == "refunded"
    assert last["data"]["previous"]["refunded_minor"] == 40_000
    assert dict(payments[0].headers())["event-id"].decode() == json.loads(payments[0].value())["id"]

    (received,) = consume(tansu.bootstrap, [f"{prefix}webhooks.surepay.payment"], 1)
    document = json.loads(received.value())
    assert document["type"] == "webhook.received"
    assert document["data"]["provider_event_id"] == "evt-kafka"
    assert document["data"]["body"] == json.loads(body)  # the provider's own body, added by the relay
    assert received.key() == f"surepay:{account.pk}:txn-k".encode()


def test_while_the_broker_is_down_nothing_is_lost_and_nothing_overtakes(settings, account):
    broker = Broker(free_port())  # not started yet: the sink's broker is down
    kafka_settings(settings, broker.bootstrap)
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 2
    settings.KAFKA_CONFIG = {**settings.KAFKA_CONFIG, "message.timeout.ms": 1500, "socket.timeout.ms": 1000}
    apply_event(account, event_id="e1", txn="txn-d")
    relay = Relay(sinks=[KafkaSink.from_settings(), EndpointSink()])
    with pytest.raises(SinkUnavailable):
        relay.publish_batch()
    head = OutboxEvent.objects.order_by("id").first()
    assert head.publish_attempts == 1 and head.last_error.startswith("kafka: cannot create topic payments.events")
    # With topics managed elsewhere, the produce itself times out.
    settings.KAFKA_CREATE_TOPICS = False
    relay.sinks[0] = KafkaSink.from_settings()
    with pytest.raises(SinkUnavailable, match="not acknowledged|refused"):
        relay.publish_batch()
    settings.KAFKA_CREATE_TOPICS = True
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 2
    assert relay.failures == 2 and 1.0 <= relay.backoff() <= 2.0
    relay.close()

    broker.start()
    try:
        apply_event(account, event_id="e2", txn="txn-d", status="failed")  # a later change
        relay = Relay(sinks=[KafkaSink.from_settings(), EndpointSink()])
        assert relay.publish_batch() == 2  # the batch kept, with nothing newer ahead of it
        relay.close()
        messages = consume(broker.bootstrap, ["payments.events"], 2)
        assert [json.loads(m.value())["type"] for m in messages] == ["payment.created", "payment.succeeded"]
    finally:
        broker.stop()
