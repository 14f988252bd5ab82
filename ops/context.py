"""The request id (and, in a worker, the running task) of the current context.

Set by ``ops.middleware.RequestIdMiddleware`` for a web request and by the Celery signals in
``ops.celery_signals`` for a task; read by the logging filter so that every log record carries
it, and by the publish signal so that a task enqueued during a request carries the request's id.
Context variables, not thread locals: each gunicorn thread and each task has its own value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
# The name of the Celery message header that carries it.
TASK_HEADER = "request_id"

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# (task id, task name) while a Celery task runs.
task_var: ContextVar[tuple[str, str] | None] = ContextVar("task", default=None)

# A caller's id is kept only if it is short and plain: it is echoed in a header and in logs.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is acceptable, else a new one."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


@contextmanager
def request_id_bound(request_id: str | None) -> Iterator[None]:
    """Run a block under ``request_id`` when one is given: a task that handles, in one message,
    items that came from different requests (the webhook batch) logs each under its own."""
    if not request_id:
        yield
        return
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)
