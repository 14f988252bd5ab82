"""Celery tasks of outbound webhooks. Thin: each calls one service. Idempotent: a delivery is
claimed with a conditional update before it is sent."""

from __future__ import annotations

from celery import shared_task

from events import outbound


@shared_task(acks_late=True, name="events.tasks.endpoint_delivery_send")
def endpoint_delivery_send(delivery_id: int) -> str:
    return outbound.delivery_send(delivery_id=delivery_id)


@shared_task(name="events.tasks.endpoint_deliveries_sweep")
def endpoint_deliveries_sweep() -> int:
    return len(outbound.deliveries_sweep())
