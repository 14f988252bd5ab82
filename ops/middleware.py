"""Middleware of the ops app. They run on every request, the webhook's included: each costs a
few microseconds (no I/O, no log line)."""

from __future__ import annotations

import functools
import re
import time

from config.metrics import UNMATCHED_ROUTE, http_request_observed
from ops.context import REQUEST_ID_HEADER, request_id_from, request_id_var

_REQUEST_ID_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


class RequestIdMiddleware:
    """Gives every request an id: the caller's ``X-Request-ID`` if it is plain and short, else a
    new one. It is in every log record written while the request runs, in every Celery task the
    request enqueues (``ops.celery_signals``), and in the response's ``X-Request-ID`` header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from(request.META.get(_REQUEST_ID_META))
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


class ProbeMiddleware:
    """Answers ``/healthz``, ``/readyz`` and ``/metrics`` before the rest of the stack.

    The kubelet probes a pod, and Prometheus scrapes it, by its IP address, which is not in
    ALLOWED_HOSTS: Django's host check (in CommonMiddleware) would answer 400. These three
    endpoints reveal nothing a Host header could protect, so they skip that check, the session
    and the auth middleware. The same views are also routed in ``config.urls``.
    """

    def __init__(self, get_response):
        from ops.views import healthz_view, metrics_view, readyz_view

        self.get_response = get_response
        self.views = {"/healthz": healthz_view, "/readyz": readyz_view, "/metrics": metrics_view}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None:
            return view(request)
        return self.get_response(request)


# Answered by ProbeMiddleware before URL resolution: their route is their path.
_PROBE_ROUTES = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)")


@functools.lru_cache(maxsize=1024)
def route_label(route: str) -> str:
    """The matched URL pattern as a label: ``path()`` routes as they are
    (``pay/<str:token>/``), ``re_path()`` ones with each named group shown as ``<name>`` and the
    anchors dropped (``api/webhooks/<provider>``)."""
    label = _NAMED_GROUP.sub(lambda match: f"<{match.group(1)}>", route)
    return label.replace("^", "").replace("/?$", "").rstrip("$")


class HttpMetricsMiddleware:
    """Counts every answered request and times it, by method, route and status
    (``config.metrics.HTTP_REQUESTS`` and ``HTTP_REQUEST_DURATION``).

    The route is the URL pattern that matched (``api/webhooks/<str:provider>``), never the path:
    the label stays bounded whatever paths are requested. Placed right after RequestIdMiddleware,
    so the probes and answers made by later middleware (the host check's 400) are counted too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        # A catch-all page for unknown addresses (marked ``unmatched_route``) matched nothing real.
        if match is not None and match.route and not getattr(match.func, "unmatched_route", False):
            route = route_label(match.route)
        else:
            route = _PROBE_ROUTES.get(request.path_info, UNMATCHED_ROUTE)
        http_request_observed(request.method, route, response.status_code, time.perf_counter() - started)
        return response
