"""The Celery app, and the two helpers every task path uses: enqueue after commit, and retry
with backoff.

Settings come from Django's settings under the ``CELERY_`` prefix.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("school_payments")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)

# After a failed publish, skip the broker for a short while: every request would otherwise wait
# for the connection timeout. What is not enqueued is stored and found by the periodic sweeps.
BROKER_BACKOFF_SECONDS = 10.0
_broker_down_until = 0.0
_broker_lock = threading.Lock()


def enqueue_on_commit(task, *args) -> None:
    """Send ``task(*args)`` once the current transaction commits (at once outside one).

    Pass ids, never model instances. A broker failure is logged, never raised: the caller's
    data is committed and a sweep re-enqueues work that was stored but not processed.
    """
    from django.db import transaction

    transaction.on_commit(lambda: _send(task, args))


def _send(task, args: tuple) -> None:
    global _broker_down_until
    if time.monotonic() < _broker_down_until:
        logger.warning("broker marked down; %s%s left for the sweep", task.name, args)
        return
    try:
        task.apply_async(args=args)
    except Exception:
        with _broker_lock:
            _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.exception("could not enqueue %s%s; the sweep will pick it up", task.name, args)


def reset_broker_backoff() -> None:
    global _broker_down_until
    _broker_down_until = 0.0


def backoff_seconds(retries: int, *, base: float = 30.0, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter: about base * 2^retries, at most ``cap``, never in step
    with other workers."""
    return min(cap, base * 2**retries) * random.uniform(0.5, 1.0)
