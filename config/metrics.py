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

from prometheus_client import Counter, Histogram

from providers.registry import PROVIDERS

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
