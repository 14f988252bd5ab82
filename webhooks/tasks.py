"""Celery tasks of webhook ingestion. Thin: each calls one service function.

Tasks are idempotent (an event is claimed with a conditional update), acknowledged late, and
retried with exponential backoff and jitter on transient errors; after the last retry, or on a
permanent error, the event is left visibly failed.
"""

from __future__ import annotations

from celery import shared_task

from config.celery import backoff_seconds
from payments.errors import PermanentError, TransientError
from webhooks import services

MAX_RETRIES = 8  # about 30 s, 1, 2, 4, 8, 16, 32, 60 min: a directory outage of a few hours


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES, name="webhooks.tasks.webhook_event_process")
def webhook_event_process_task(self, event_id: int) -> str | None:
    try:
        return services.webhook_event_process(event_id=event_id)
    except TransientError as exc:
        if self.request.retries >= self.max_retries:
            services.webhook_event_fail(event_id=event_id, error=f"gave up after {self.request.retries + 1} attempts: {exc}")
            return "failed"
        countdown = backoff_seconds(self.request.retries)
        services.webhook_event_defer(event_id=event_id, error=str(exc), retry_in_seconds=countdown)
        if self.request.is_eager:
            # Inline mode (development, no broker) would retry at once, inside the request;
            # the event stays pending for the sweep instead.
            return "deferred"
        raise self.retry(exc=exc, countdown=countdown)
    except PermanentError as exc:
        services.webhook_event_fail(event_id=event_id, error=str(exc))
        return "failed"


@shared_task(name="webhooks.tasks.webhook_events_sweep")
def webhook_events_sweep() -> int:
    return len(services.webhook_events_sweep())
