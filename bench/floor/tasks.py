"""The floor of the worker benchmark: a bare Celery task that reads one row and updates one row
per id, acknowledged late like the real one. Nothing else: no claim, no payment, no audit."""

from celery import shared_task
from django.utils import timezone

from bench.floor.models import FloorEvent


@shared_task(acks_late=True, name="bench.floor.tasks.floor_events_process")
def floor_events_process(events: list) -> int:
    for item in events:
        event_id = item if isinstance(item, int) else item[0]
        event = FloorEvent.objects.get(pk=event_id)
        FloorEvent.objects.filter(pk=event.pk).update(processed_at=timezone.now())
    return len(events)
