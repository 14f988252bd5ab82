"""The Kafka sink (confluent-kafka, librdkafka): every event on its topic, keyed by its
transaction so one transaction's events land on one partition, in order.

Topics (with ``KAFKA_TOPIC_PREFIX`` in front):
- ``webhooks.<provider>.<kind>``: a stored provider event, ``<kind>`` the first part of the
  provider's event type (``webhooks.stripe.payment_intent``, ``webhooks.stripe.charge``);
- ``webhooks.dlq``: dead letters (signed but invalid) and events whose processing gave up;
- ``payments.events``: every ``payment.*`` event. One topic, not one per type: a payment's
  events keep their order only within one partition of one topic.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property

from django.conf import settings

from events.envelope import Envelope
from events.sinks.base import Sink, SinkUnavailable

logger = logging.getLogger(__name__)

DLQ_TOPIC = "webhooks.dlq"
PAYMENTS_TOPIC = "payments.events"
_NOT_TOPIC_CHARS = re.compile(r"[^a-z0-9_-]+")


def topic_for(event: Envelope) -> str:
    if event.event_type.startswith("payment."):
        return PAYMENTS_TOPIC
    if event.event_type in ("webhook.dead_lettered", "webhook.failed"):
        return DLQ_TOPIC
    data = event.document["data"]
    provider = _NOT_TOPIC_CHARS.sub("_", str(data.get("provider", "")).lower()) or "unknown"
    kind = _NOT_TOPIC_CHARS.sub("_", str(data.get("event_type", "")).split(".")[0].lower()).strip("_") or "event"
    return f"webhooks.{provider}.{kind[:100]}"


class KafkaSink(Sink):
    name = "kafka"

    def __init__(
        self,
        config: dict,
        *,
        topic_prefix: str = "",
        create_topics: bool = True,
        partitions: int = 3,
        replication_factor: int = 3,
        timeout_seconds: float = 10.0,
    ):
        self.config = dict(config)
        self.topic_prefix = topic_prefix
        self.create_topics = create_topics
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout_seconds = timeout_seconds
        self._known_topics: set[str] = set()

    @classmethod
    def from_settings(cls) -> KafkaSink:
        return cls(
            settings.KAFKA_CONFIG,
            topic_prefix=settings.KAFKA_TOPIC_PREFIX,
            create_topics=settings.KAFKA_CREATE_TOPICS,
            partitions=settings.KAFKA_TOPIC_PARTITIONS,
            replication_factor=settings.KAFKA_TOPIC_REPLICATION_FACTOR,
            timeout_seconds=settings.KAFKA_PUBLISH_TIMEOUT_SECONDS,
        )

    @cached_property
    def producer(self):
        from confluent_kafka import Producer

        return Producer(self.config)

    def topic(self, event: Envelope) -> str:
        return self.topic_prefix + topic_for(event)

    def _ensure_topics(self, topics: set[str]) -> None:
        """Create topics not seen yet (where this service may: ``KAFKA_CREATE_TOPICS``); one that
        exists already is fine."""
        missing = topics - self._known_topics
        if not missing:
            return
        if self.create_topics:
            from confluent_kafka import KafkaError, KafkaException
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({k: v for k, v in self.config.items() if not _producer_only(k)})
            futures = admin.create_topics(
                [NewTopic(t, num_partitions=self.partitions, replication_factor=self.replication_factor) for t in missing],
                request_timeout=self.timeout_seconds,
            )
            for topic, future in futures.items():
                try:
                    future.result(timeout=self.timeout_seconds)
                except KafkaException as exc:
                    if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        continue
                    raise SinkUnavailable(f"kafka: cannot create topic {topic}: {exc}") from exc
                except Exception as exc:  # noqa: BLE001 - a timeout: the broker is not answering
                    raise SinkUnavailable(f"kafka: cannot create topic {topic}: {exc!r}") from exc
        self._known_topics |= missing

    def publish(self, events: list[Envelope]) -> None:
        if not events:
            return
        self._ensure_topics({self.topic(event) for event in events})
        failures: list[str] = []

        def delivered(error, message) -> None:
            if error is not None:
                failures.append(f"{message.topic()}: {error}")

        try:
            for event in events:
                self._produce(event, delivered)
            remaining = self.producer.flush(self.timeout_seconds)
        except SinkUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - librdkafka's errors (config, broker, buffer)
            raise SinkUnavailable(f"kafka: {exc!r}") from exc
        if remaining:
            raise SinkUnavailable(f"kafka: {remaining} of {len(events)} messages not acknowledged in {self.timeout_seconds}s")
        if failures:
            raise SinkUnavailable(f"kafka: {len(failures)} messages refused, first: {failures[0]}")

    def _produce(self, event: Envelope, delivered) -> None:
        arguments = dict(
            topic=self.topic(event),
            key=event.key.encode(),
            value=event.body,
            headers=[
                ("event-id", event.event_id.encode()),
                ("event-type", event.event_type.encode()),
                ("event-version", str(event.version).encode()),
                ("content-type", b"application/json"),
            ],
            on_delivery=delivered,
        )
        try:
            self.producer.produce(**arguments)
        except BufferError:
            # The local queue is full: let it drain, then once more (a second refusal is raised).
            self.producer.flush(self.timeout_seconds)
            self.producer.produce(**arguments)
        self.producer.poll(0)

    def close(self) -> None:
        if "producer" in self.__dict__:
            self.producer.flush(self.timeout_seconds)


_PRODUCER_ONLY = ("enable.idempotence", "acks", "linger.ms", "max.in.flight", "message.", "compression.", "retries")


def _producer_only(name: str) -> bool:
    return name.startswith(_PRODUCER_ONLY)
