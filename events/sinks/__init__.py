"""Where the relay publishes: one class per kind of sink behind ``base.Sink``, chosen by
settings (``sinks_configured``)."""

from __future__ import annotations

from django.conf import settings

from events.sinks.base import Sink, SinkUnavailable


def sinks_configured() -> list[Sink]:
    """Kafka when ``KAFKA_BOOTSTRAP_SERVERS`` is set; the schools' endpoints always."""
    from events.sinks.endpoints import EndpointSink

    sinks: list[Sink] = []
    if settings.KAFKA_CONFIG.get("bootstrap.servers"):
        from events.sinks.kafka import KafkaSink

        sinks.append(KafkaSink.from_settings())
    sinks.append(EndpointSink())
    return sinks


__all__ = ["Sink", "SinkUnavailable", "sinks_configured"]
