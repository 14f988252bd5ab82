"""Celery tasks of the QuickBooks sync. Thin: each calls one service function.

Idempotent: a school's sync runs in one lane at a time and every record carries its own state,
so a duplicated or redelivered message does nothing twice; acknowledged late. Retries are kept
per record (attempts, exponential backoff with jitter in ``next_attempt_at``) so they survive a
lost message; the sync reschedules itself for the earliest retry, and the backlog scan (beat)
wakes anything that slipped through.
"""

from __future__ import annotations

from celery import shared_task

from quickbooks_sync import services


@shared_task(acks_late=True, name="quickbooks_sync.tasks.qbo_school_sync")
def qbo_school_sync_task(school_id: int) -> str:
    return services.qbo_school_sync(school_id=school_id)


@shared_task(acks_late=True, name="quickbooks_sync.tasks.qbo_backlog_scan")
def qbo_backlog_scan_task() -> int:
    return len(services.qbo_backlog_scan())


@shared_task(acks_late=True, name="quickbooks_sync.tasks.qbo_tokens_keepalive")
def qbo_tokens_keepalive_task() -> int:
    return services.qbo_tokens_keepalive()


# The keepalive's name before it matched its service: a message queued by a beat of the previous
# release still finds a task during a rolling deploy.
@shared_task(acks_late=True, name="quickbooks_sync.tasks.qbo_tokens_refresh")
def qbo_tokens_keepalive_under_its_old_name_task() -> int:
    return services.qbo_tokens_keepalive()
