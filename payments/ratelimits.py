"""Abuse limits: requests per client address on the parents' pages, failed webhook deliveries
per provider account, and the admin login lockout's answer. Every limit is answered ``429`` with
``Retry-After``.

Counting is django-ratelimit's (fixed windows in a cache, ``django_ratelimit.core.get_usage``);
the cache is Redis, shared by every replica (``config.cache``: this process's memory while Redis
is unreachable, and always under ``make run``). The admin login lockout is django-axes'; its
answer is ``admin_login_locked_out`` here. The rates are settings (``RATE_LIMITS``).

The client address is ``core.client_ip`` (``REMOTE_ADDR``, or ``X-Forwarded-For`` as far as
``TRUSTED_PROXIES`` vouch for it), so a client cannot pick a fresh address per request.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

from core.client_ip import client_ip


class RateLimited(Exception):
    """A limit was reached; ``retry_after`` is the seconds until its window ends."""

    detail = "Too many failed deliveries for this account: try again later"

    def __init__(self, retry_after: int):
        super().__init__(retry_after)
        self.retry_after = retry_after


def client_address(request: HttpRequest) -> str:
    return client_ip(request.META) or "unknown"


def limit_reached(*, group: str, key: str, rate: str, request: HttpRequest | None = None) -> int | None:
    """Count one hit of ``key`` in ``group``; the seconds until the window ends if the count is now
    over ``rate`` ("30/m"), else None."""
    usage = get_usage(request, group=group, key=lambda _group, _request: key, rate=rate, increment=True)
    if usage is None or not usage["should_limit"]:
        return None
    return max(1, usage["time_left"])


def too_many_requests(request: HttpRequest, retry_after: int, *, json: bool = False) -> HttpResponse:
    detail = f"Too many requests from your address: try again in {retry_after} seconds."
    if json:
        response = JsonResponse({"detail": detail, "code": "rate_limited"}, status=429)
    else:
        response = render(request, "payments/too_many_requests.html", {"retry_after": retry_after}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def rate_limited(limit: str, *, json: bool = False) -> Callable:
    """Limit a view per client address with the rate ``settings.RATE_LIMITS[limit]``."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            retry_after = limit_reached(
                group=f"view:{limit}", key=client_address(request), rate=settings.RATE_LIMITS[limit], request=request
            )
            if retry_after is not None:
                return too_many_requests(request, retry_after, json=json)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def webhook_refusal_limit(*, account_id: int | None, remote_addr: str | None) -> None:
    """Count one refused webhook delivery (authentication failed, or no such account) and raise
    ``RateLimited`` once there are too many: per account, or per client address when there is no
    account. Called only after a refusal, so genuine deliveries never wait for the count, and a
    flood of forged ones cannot lock the real provider out."""
    key = f"account:{account_id}" if account_id is not None else f"address:{remote_addr or 'unknown'}"
    retry_after = limit_reached(group="webhook-refusals", key=key, rate=settings.RATE_LIMITS["webhook_refusals"])
    if retry_after is not None:
        raise RateLimited(retry_after)


def admin_login_locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a locked-out login (``AXES_LOCKOUT_CALLABLE``)."""
    retry_after = max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds()))
    response = render(
        request,
        "admin/login_locked_out.html",
        {"retry_after_minutes": math.ceil(retry_after / 60), "title": "Too many failed logins"},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


def admin_client_address(request: HttpRequest) -> str | None:
    """django-axes' client address (``AXES_CLIENT_IP_CALLABLE``): the same rule as everywhere;
    None when unknown (axes stores it in an address column)."""
    return client_ip(request.META)
