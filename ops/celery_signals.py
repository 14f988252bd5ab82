"""Celery signal handlers of the ops app, connected in ``config.celery``.

Request ids: a task published while a request (or another task) runs carries that id in its
message headers (``before_task_publish``); the worker restores it around the task
(``task_prerun``/``task_postrun``), so the task's log records carry the id of the request that
caused them. A task published outside any request (beat, the sweep) runs under its own task
id. The webhook batch publisher's thread is outside any request too, so it carries each event's
request id inside the message instead (``webhooks.tasks``, ``ops.context.request_id_bound``).

Metrics: every task run is counted by outcome and timed (``task_prerun``/``task_postrun``); a
worker with WORKER_METRICS_PORT set serves its metrics (and ``/healthz``) on that port; in
multiprocess mode the directory is emptied when the worker starts.
"""

from __future__ import annotations

import logging
import os
import time

from ops.context import TASK_HEADER, current_request_id, request_id_var, task_var

logger = logging.getLogger(__name__)


def request_id_publish(headers=None, **kwargs) -> None:
    """``before_task_publish``: put the current request id in the message headers."""
    if headers is None or headers.get(TASK_HEADER):
        return
    request_id = current_request_id()
    if request_id:
        headers[TASK_HEADER] = request_id


def request_id_restore(task_id=None, task=None, **kwargs) -> None:
    """``task_prerun``: run the task under the request id it was published with."""
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        # Run inline, in the caller's own context (development without a broker): keep its id.
        return
    request_id = getattr(request, TASK_HEADER, None) or (request.headers or {}).get(TASK_HEADER) or task_id
    request_id_var.set(request_id)
    task_var.set((task_id or "", getattr(task, "name", "")))


def request_id_clear(task=None, **kwargs) -> None:
    """``task_postrun``: nothing of one task's context leaks into the next one."""
    request = getattr(task, "request", None)
    if request is not None and getattr(request, "is_eager", False):
        return
    request_id_var.set(None)
    task_var.set(None)


# task id -> perf_counter at its start, in the process running it (entries removed at its end).
_task_started: dict[str, float] = {}


def task_metrics_start(task_id=None, **kwargs) -> None:
    """``task_prerun``."""
    if task_id:
        _task_started[task_id] = time.perf_counter()


def task_metrics_end(task_id=None, task=None, state=None, **kwargs) -> None:
    """``task_postrun``: count the run by its final state and observe its duration."""
    from config.metrics import CELERY_TASK_DURATION, CELERY_TASKS

    started = _task_started.pop(task_id, None) if task_id else None
    name = getattr(task, "name", None) or "unknown"
    CELERY_TASKS.labels(name, (state or "unknown").lower()).inc()
    if started is not None:
        CELERY_TASK_DURATION.labels(name).observe(time.perf_counter() - started)


def worker_metrics_start(**kwargs) -> None:
    """``worker_init`` (the worker's main process, before its pool starts)."""
    from django.conf import settings

    from ops.metrics import multiprocess_dir_reset, worker_metrics_serve

    multiprocess_dir_reset()
    port = settings.WORKER_METRICS_PORT
    if port:
        worker_metrics_serve(port=port, token=settings.METRICS_BEARER_TOKEN or None)
        logger.info("worker metrics on port %d (pid %d)", port, os.getpid())


def worker_process_metrics_done(pid=None, **kwargs) -> None:
    """``worker_process_shutdown`` (a pool process): tell multiprocess mode it is gone."""
    from ops.metrics import multiprocess_dir

    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def connect(app) -> None:
    """Connect every handler (called once, by ``config.celery``)."""
    from celery import signals

    signals.before_task_publish.connect(request_id_publish, weak=False, dispatch_uid="ops-request-id-publish")
    signals.task_prerun.connect(request_id_restore, weak=False, dispatch_uid="ops-request-id-restore")
    signals.task_postrun.connect(request_id_clear, weak=False, dispatch_uid="ops-request-id-clear")
    signals.task_prerun.connect(task_metrics_start, weak=False, dispatch_uid="ops-task-metrics-start")
    signals.task_postrun.connect(task_metrics_end, weak=False, dispatch_uid="ops-task-metrics-end")
    signals.worker_init.connect(worker_metrics_start, weak=False, dispatch_uid="ops-worker-metrics")
    signals.worker_process_shutdown.connect(worker_process_metrics_done, weak=False, dispatch_uid="ops-worker-process-done")
