"""The schools' own endpoints: each event of a school becomes one delivery per endpoint that
wants it, sent and retried by Celery (``events.outbound``). Written in the relay's own
transaction, so each event is handed over exactly once (and a delivery is unique per endpoint
and event besides)."""

from __future__ import annotations

from config.celery import enqueue_on_commit
from events.envelope import Envelope
from events.models import EndpointDelivery, WebhookEndpoint
from events.sinks.base import Sink

SEND_TASK = "events.tasks.endpoint_delivery_send"


class EndpointSink(Sink):
    name = "endpoints"
    transactional = True

    def publish(self, events: list[Envelope]) -> None:
        schools = {event.school_id for event in events if event.school_id is not None}
        if not schools:
            return
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(school_id__in=schools, is_active=True).only(
            "id", "school_id", "event_types"
        ):
            endpoints.setdefault(endpoint.school_id, []).append(endpoint)
        deliveries = [
            EndpointDelivery(
                endpoint_id=endpoint.pk, event_id=event.event_id, event_type=event.event_type, body=event.body.decode()
            )
            for event in events
            for endpoint in endpoints.get(event.school_id, ())
            if endpoint.wants(event.event_type)
        ]
        if not deliveries:
            return
        EndpointDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        # The ids of the rows just made (ignore_conflicts does not return them): new, untried ones.
        ids = list(
            EndpointDelivery.objects.filter(
                event_id__in={d.event_id for d in deliveries},
                endpoint_id__in={d.endpoint_id for d in deliveries},
                attempts=0,
                claimed_at__isnull=True,
            ).values_list("pk", flat=True)
        )
        for delivery_id in ids:
            enqueue_on_commit(SEND_TASK, delivery_id)
