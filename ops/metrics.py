"""Serving the metrics of ``config.metrics``: the registry a scrape reads, the gauges computed
from the database at scrape time, and the small metrics server of a Celery worker.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set): a scrape reads the files every process of
this process tree wrote (``MultiProcessCollector``), so whichever gunicorn worker answers, the
totals are the pod's. Otherwise the default registry of this one process is read.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def multiprocess_dir_reset() -> None:
    """Empty the multiprocess directory (creating it if needed). Call once, when a process
    tree starts and before any of its processes counts: files left by an earlier run would
    otherwise be added to this run's totals."""
    directory = multiprocess_dir()
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


class DatabaseGauges:
    """Gauges read from the database when scraped: the webhook backlog and the QuickBooks sync
    backlog. Cached for METRICS_DB_CACHE_SECONDS, bounded by a statement timeout, and never an
    error for the scrape: ``metrics_database_up`` says whether the values could be read.

    Served by the web pods only (every web pod reports the same values: aggregate with
    ``max()``, not ``sum()``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, dict | None] = (0.0, None)

    def clear(self) -> None:
        with self._lock:
            self._cached = (0.0, None)

    def describe(self):
        # Named here so registering does not query the database.
        return self._families(None)

    def collect(self):
        with self._lock:
            expires, values = self._cached
            now = time.monotonic()
            if now >= expires:
                values = self._read()
                self._cached = (now + settings.METRICS_DB_CACHE_SECONDS, values)
        return self._families(values)

    @staticmethod
    def _read() -> dict | None:
        from ops.selectors import backlog_read

        try:
            return backlog_read(timeout_ms=int(settings.READINESS_TIMEOUT_SECONDS * 1000))
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            logger.warning("metrics: could not read the backlog gauges from the database", exc_info=True)
            return None

    @staticmethod
    def _families(values: dict | None) -> list:
        up = GaugeMetricFamily(
            "metrics_database_up", "1 when the scrape-time database gauges below could be read, else 0."
        )
        unfinished = GaugeMetricFamily(
            "webhook_events_unfinished", "Webhook events stored and not yet processed, by status.", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "webhook_events_oldest_unfinished_age_seconds",
            "Age of the oldest webhook event not yet processed (0 when there is none).",
        )
        sync_backlog = GaugeMetricFamily(
            "payments_sync_backlog",
            "Payments and refunds not yet in QuickBooks, by sync status (pending, paused, failed).",
            labels=["status"],
        )
        outbox = GaugeMetricFamily("outbox_unpublished", "Outbox events not yet published by the relay.")
        outbox_oldest = GaugeMetricFamily(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest outbox event not yet published (0 when there is none): a sink down or the relay stopped.",
        )
        families = [up, unfinished, oldest, sync_backlog, outbox, outbox_oldest]
        if values is None:
            up.add_metric([], 0)
            return families
        up.add_metric([], 1)
        for status, count in sorted(values["unfinished"].items()):
            unfinished.add_metric([status], count)
        oldest.add_metric([], values["oldest_unfinished_age_seconds"])
        for status, count in sorted(values["sync_backlog"].items()):
            sync_backlog.add_metric([status], count)
        outbox.add_metric([], values["outbox_unpublished"])
        outbox_oldest.add_metric([], values["outbox_oldest_age_seconds"])
        return families


class _Everything:
    """A collector that yields what another registry collects (no ``describe``: registering it
    checks no names)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()


_registry_lock = threading.Lock()
_scrape_registry: CollectorRegistry | None = None
database_gauges = DatabaseGauges()


def scrape_registry() -> CollectorRegistry:
    """The registry ``/metrics`` serves, made once per process."""
    global _scrape_registry
    with _registry_lock:
        if _scrape_registry is None:
            registry = CollectorRegistry()
            if multiprocess_dir():
                multiprocess.MultiProcessCollector(registry)
            else:
                registry.register(_Everything(REGISTRY))  # this process's metrics, process and GC
            registry.register(database_gauges)
            _scrape_registry = registry
        return _scrape_registry


def render_metrics(*, accept: str | None, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry or scrape_registry()), content_type


# --- The Celery worker's metrics server -------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def worker_metrics_app(token: str | None = None):
    """WSGI app of a worker's metrics port: ``/metrics`` (the worker processes' metrics, no
    database gauges: the web pods report those) and ``/healthz`` (the worker's main process
    is up)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    metrics_app = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode() if token else None

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status": "ok"}']
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"detail": "Not found"}']
        if expected and not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", "").encode(), expected):
            start_response("401 Unauthorized", [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])
            return [b'{"detail": "Metrics need a bearer token", "code": "unauthorized"}']
        return metrics_app(environ, start_response)

    return app


def worker_metrics_serve(*, port: int, host: str = "0.0.0.0", token: str | None = None):  # noqa: S104 - a pod port
    """Serve ``worker_metrics_app`` in a daemon thread; returns the server."""
    server = make_server(host, port, worker_metrics_app(token), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server
