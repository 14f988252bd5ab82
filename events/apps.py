from django.apps import AppConfig


class EventsConfig(AppConfig):
    """Payment and webhook events out of the service: the outbox relay, its sinks (Kafka, the
    schools' own endpoints) and signed outbound webhooks (docs/events.md)."""

    name = "events"
