"""Middleware of the ops app. Both run on every request, the webhook's included: each costs a
few microseconds (no I/O, no log line)."""

from __future__ import annotations

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
