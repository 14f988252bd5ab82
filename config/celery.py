"""The Celery app, and the helpers every task path uses: enqueue after commit (one task, or ids
batched into few messages), and retry backoff.

Settings come from Django's settings under the ``CELERY_`` prefix.
"""

from __future__ import annotations

import atexit
import importlib
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

# --- Ops: request ids into and out of task messages, worker metrics -------------------
# Handlers in ops.celery_signals; beat entries are in settings.CELERY_BEAT_SCHEDULE.
from ops import celery_signals  # noqa: E402 - after the app exists

celery_signals.connect(app)

logger = logging.getLogger(__name__)

# After a failed publish, skip the broker for a short while: every request would otherwise wait
# for the connection timeout. What is not enqueued is stored and found by the periodic sweeps.
BROKER_BACKOFF_SECONDS = 10.0
_broker_down_until = 0.0


def _broker_marked_down() -> bool:
    return time.monotonic() < _broker_down_until


def _mark_broker_down() -> None:
    global _broker_down_until
    _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS


def reset_broker_backoff() -> None:
    global _broker_down_until
    _broker_down_until = 0.0


def task_named(name: str):
    """The registered task called ``name``. Task names are ``<module>.<function>``: the module is
    imported here, so callers never import task modules (services sit below their tasks)."""
    if name not in app.tasks:
        importlib.import_module(name.rpartition(".")[0])
    return app.tasks[name]


def publish(task: str, args: tuple, *, countdown: float | None = None) -> bool:
    """Publish one message for the task named ``task`` now. A broker failure is logged, never
    raised: the caller's data is committed and a sweep re-enqueues work that was stored but not
    processed. (A task object is accepted too, for tests' own tasks.)"""
    name = getattr(task, "name", task)
    if _broker_marked_down():
        logger.warning("broker marked down; %s left for the sweep", name)
        return False
    try:
        if app.conf.task_always_eager:
            task_named(name).apply_async(args=args, countdown=countdown)
        else:
            # By name: a web process sends messages without importing any task module.
            app.send_task(name, args=args, countdown=countdown)
    except Exception:
        _mark_broker_down()
        logger.exception("could not enqueue %s; the sweep will pick it up", name)
        return False
    return True


def tasks_run_inline() -> bool:
    """True where tasks run in the caller's process (``make run`` without Redis, most tests)."""
    return bool(app.conf.task_always_eager)


def enqueue_on_commit(task: str, *args) -> None:
    """Send the task named ``task`` with ``args`` once the current transaction commits (at once
    outside one). Pass ids, never model instances."""
    from django.db import transaction

    transaction.on_commit(lambda: publish(task, args))


class BatchPublisher:
    """Publishes ids as ``task(list_of_ids)`` messages, many ids per message.

    Publishing one Celery message costs about as much as the rest of a webhook request, so on
    the hot path ids are collected and a background thread sends one message per ``max_delay``
    seconds (or per ``max_batch`` ids). Ids lost with a killed process are stored work, found by
    the sweep. With tasks running inline (no broker) each id is sent at once.
    """

    def __init__(self, task_name: str, *, max_batch: int = 500, max_delay: float = 0.1):
        self.task_name = task_name
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._reset()
        atexit.register(self.flush)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._condition = threading.Condition()
        self._pending: list = []
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    def add_on_commit(self, item) -> None:
        from django.db import transaction

        transaction.on_commit(lambda: self.add(item))

    def add(self, item) -> None:
        if app.conf.task_always_eager:
            publish(self.task_name, ([item],))
            return
        if self._pid != os.getpid():
            self._reset()  # forked (gunicorn worker): locks and threads do not survive a fork
        with self._condition:
            self._pending.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-publisher", daemon=True)
                self._thread.start()
            self._condition.notify()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything added so far has been published (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._condition.notify()
            while (self._pending or self._in_flight) and self._thread is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
            time.sleep(self.max_delay)  # let a batch gather
            with self._condition:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                self._in_flight = len(batch)
            try:
                publish(self.task_name, (batch,))
            except Exception:  # noqa: BLE001 - this thread must outlive any error; the sweep recovers
                logger.exception("batch publisher failed; %d ids left for the sweep", len(batch))
            finally:
                with self._condition:
                    self._in_flight = 0
                    self._condition.notify_all()


def backoff_seconds(attempt: int, *, base: float | None = None, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter: about base * 2^attempt (base from
    TASK_RETRY_BASE_SECONDS), at most ``cap``, never in step with other workers."""
    from django.conf import settings

    base = settings.TASK_RETRY_BASE_SECONDS if base is None else base
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
