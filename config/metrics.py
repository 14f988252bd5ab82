"""The service's Prometheus metrics: every metric object is defined here, once.

Code that counts something imports the object (or the small helper next to it) from here;
``ops.views.metrics_view`` serves them at ``/metrics``.

Several processes: gunicorn runs several workers and Celery several pool processes, each with
its own memory. With ``PROMETHEUS_MULTIPROC_DIR`` set (the image sets it), prometheus_client
keeps every value in a file per process in that directory, and a scrape adds them up
(``prometheus_client.multiprocess``). The directory must exist, be empty when the process tree
starts (``config/gunicorn.conf.py`` and ``ops.celery_signals`` clear it) and belong to one
process tree. Without the variable (``make run``, tests) values live in this process only.

Counting must cost microseconds on the webhook request path: a cached label child and one
``inc()``; no I/O.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Histogram

from providers.registry import PROVIDERS

# Every process writes its values there, from its first count on (a database query counts, so a
# management command does too): the directory must exist, also in a fresh emptyDir (the migration
# Job, `kubectl exec ... manage.py`). Emptying it is the process tree's first process's job.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# --- Webhooks -----------------------------------------------------------------------------------

WEBHOOKS_RECEIVED = Counter(
    "webhooks_received",  # exposed as webhooks_received_total
    "Webhook deliveries answered, by provider and outcome (accepted, duplicate, or the error code "
    "of the answer: signature_invalid, invalid_payload, ...).",
    ["provider", "outcome"],
)

WEBHOOK_PROCESSING_LAG = Histogram(
    "webhook_processing_lag_seconds",
    "Time from a webhook's receipt to the end of its processing by a worker (retries included).",
    ["provider"],
    # From "the worker picked it up at once" to "processed after hours of retries".
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600),
)

# The request path's group commit (webhooks/inbox.py): how full its statements are, and how often
# one failed and its deliveries were stored one by one.
WEBHOOK_INBOX_STATEMENT_ROWS = Histogram(
    "webhook_inbox_statement_rows",
    "Deliveries stored by each statement of the webhook request path's group commit.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)

WEBHOOK_INBOX_FALLBACKS = Counter(
    "webhook_inbox_fallbacks",  # exposed as webhook_inbox_fallbacks_total
    "Group statements of the webhook request path that failed: each of their deliveries was then "
    "stored alone.",
)

# --- QuickBooks Online (incremented by quickbooks_sync) ----------------------------------------

QBO_REQUESTS = Counter(
    "qbo_requests",  # exposed as qbo_requests_total
    "QuickBooks Online API calls, by outcome: ok, client_error (4xx), server_error (5xx), "
    "throttled (429), auth_error (401/403, expired authorisation), transport_error (timeouts, "
    "connection errors).",
    ["outcome"],
)

QBO_THROTTLED = Counter(
    "qbo_throttled",  # exposed as qbo_throttled_total
    "QuickBooks calls held back by our per-company rate limiter, or answered 429 by QuickBooks.",
    ["source"],  # limiter | http_429
)

QBO_REQUEST_OUTCOMES = ("ok", "client_error", "server_error", "throttled", "auth_error", "transport_error")

# Label values are bounded: a provider slug from the path that the registry does not know is
# counted as "unknown", so a caller cannot create series at will.
UNKNOWN_PROVIDER = "unknown"
_webhook_children: dict[tuple[str, str], object] = {}


def webhook_answered(provider: str, outcome: str) -> None:
    """Count one answered webhook delivery. ``outcome`` is ``accepted``, ``duplicate`` or the
    answer's error code (a fixed set, from the view's table)."""
    key = (provider, outcome)
    child = _webhook_children.get(key)
    if child is None:
        slug = provider.lower()
        child = WEBHOOKS_RECEIVED.labels(slug if slug in PROVIDERS else UNKNOWN_PROVIDER, outcome)
        if len(_webhook_children) < 10_000:  # the path's case variants are not unbounded either
            _webhook_children[key] = child
    child.inc()


def webhook_processed(provider: str, lag_seconds: float) -> None:
    """Observe the receipt-to-processed time of one webhook event (in the worker)."""
    WEBHOOK_PROCESSING_LAG.labels(provider).observe(max(lag_seconds, 0.0))


# --- HTTP requests (ops.middleware.HttpMetricsMiddleware) -----------------------------------------

HTTP_REQUESTS = Counter(
    "http_requests",  # exposed as http_requests_total
    "HTTP requests answered, by method, route (the URL pattern, e.g. api/webhooks/<str:provider>; "
    "'unmatched' for paths no pattern matches) and status code.",
    ["method", "route", "status"],
)

HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request entering Django to its response leaving it, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Methods outside this set are counted as "other": the label stays bounded whatever is sent.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
_http_children: dict[tuple, tuple] = {}


def http_request_observed(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration. Label children are cached: a few
    microseconds per request."""
    key = (method, route, status)
    children = _http_children.get(key)
    if children is None:
        label_method = method if method in HTTP_METHODS else "other"
        children = (
            HTTP_REQUESTS.labels(label_method, route, str(status)),
            HTTP_REQUEST_DURATION.labels(label_method, route),
        )
        if len(_http_children) < 10_000:  # routes and status codes are few; methods are bounded
            _http_children[key] = children
    counter, histogram = children
    counter.inc()
    histogram.observe(seconds)


# --- Database (ops.db: a wrapper around every query of every connection) -------------------------

DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds",
    "Time each SQL statement took (executemany counts once), by database alias.",
    ["alias"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

DB_QUERY_ERRORS = Counter(
    "db_query_errors",  # exposed as db_query_errors_total
    "SQL statements that raised (constraint violations included: a duplicate webhook is one), by "
    "database alias and error class.",
    ["alias", "error"],
)

DB_CONNECTIONS_OPENED = Counter(
    "db_connections_opened",  # exposed as db_connections_opened_total
    "Database connections opened, by alias (steady growth means connections are not reused).",
    ["alias"],
)

# --- Celery tasks (ops.celery_signals) -------------------------------------------------------------

CELERY_TASKS = Counter(
    "celery_tasks",  # exposed as celery_tasks_total
    "Task runs that ended, by task name and outcome: success, failure, retry (it raised and was "
    "scheduled again), ignore, reject.",
    ["task", "outcome"],
)

CELERY_TASK_DURATION = Histogram(
    "celery_task_duration_seconds",
    "Run time of each task run, by task name (retries are separate runs).",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
