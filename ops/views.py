"""Probes and metrics: ``/healthz``, ``/readyz``, ``/metrics``.

Reached through ``ops.middleware.ProbeMiddleware`` (before the host check) and ``config.urls``.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from ops import health
from ops.metrics import render_metrics


def healthz_view(request: HttpRequest) -> JsonResponse:
    """Liveness: the process is up and serving. No I/O, so a slow database never gets a
    healthy pod restarted."""
    return JsonResponse({"status": "ok"})


def readyz_view(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and Redis are reachable (short timeouts). 503 with the reason
    per check when not, so the pod is taken out of the Service until they are."""
    ready, checks = health.readiness()
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this process tree's metrics. With METRICS_BEARER_TOKEN set, the
    scraper must send ``Authorization: Bearer <token>``."""
    token = settings.METRICS_BEARER_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = JsonResponse({"detail": "Metrics need a bearer token", "code": "unauthorized"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = render_metrics(accept=request.META.get("HTTP_ACCEPT"))
    return HttpResponse(body, content_type=content_type)
