"""Celery tasks of webhook ingestion. Thin: each calls one service function.

Idempotent (each event is claimed with a conditional update and applied once), acknowledged late.
A message's events are applied together, in one transaction (``webhooks.batches``).
Retries are scheduled per event with exponential backoff and jitter, counted in the event's own
``attempts`` column so they survive a lost broker message (``services.webhook_event_run``).
"""

from __future__ import annotations

from celery import shared_task

from webhooks import batches, services


@shared_task(acks_late=True, name="webhooks.tasks.webhook_events_process")
def webhook_events_process_task(events: list) -> dict[int, str | None]:
    """``events``: event ids (the sweep, retries) or ``[event id, request id]`` pairs (the
    request path and replay), so that each event is processed under the id of the request that
    stored it, even when one message carries events of many requests."""
    pairs = [(item, None) if isinstance(item, int) else tuple(item) for item in events]
    return batches.webhook_events_process(events=pairs)


@shared_task(name="webhooks.tasks.webhook_events_sweep")
def webhook_events_sweep_task() -> int:
    return len(services.webhook_events_sweep())
