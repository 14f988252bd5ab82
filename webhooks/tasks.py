"""Celery tasks of webhook ingestion. Thin: each calls one service function.

Idempotent (each event is claimed with a conditional update and applied once), acknowledged late.
Retries are scheduled per event with exponential backoff and jitter, counted in the event's own
``attempts`` column so they survive a lost broker message (``services.webhook_event_run``).
"""

from __future__ import annotations

from celery import shared_task

from webhooks import services


@shared_task(acks_late=True, name="webhooks.tasks.webhook_events_process")
def webhook_events_process_task(event_ids: list[int]) -> dict[int, str | None]:
    return {event_id: services.webhook_event_run(event_id=event_id) for event_id in event_ids}


@shared_task(name="webhooks.tasks.webhook_events_sweep")
def webhook_events_sweep_task() -> int:
    return len(services.webhook_events_sweep())
