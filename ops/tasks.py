"""Celery tasks of the ops app. Thin: each calls one service function."""

from __future__ import annotations

from celery import shared_task

from ops import services


@shared_task(name="ops.tasks.webhook_bodies_purge")
def webhook_bodies_purge_task() -> int:
    """Daily (beat): the webhook body retention. Idempotent: a second run finds nothing."""
    return services.webhook_bodies_purge()
