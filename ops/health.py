"""Readiness checks: can this process reach its database and Redis right now?

Each check has a short timeout of its own (READINESS_TIMEOUT_SECONDS), so a probe answers in
about that time even when a dependency hangs instead of refusing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections

from ops.logs import redact_text


def _describe(exc: Exception) -> str:
    # The reason, without credentials a driver may put in its message (a URL, a password).
    message = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return f"{type(exc).__name__}: {message}"[:300]


def database_check(*, timeout: float) -> str | None:
    """None when ``SELECT 1`` succeeds, else why not.

    On a connection of its own, made with a connect timeout of ``timeout`` seconds: the probe
    must not wait on, or break, the connection the request threads use.
    """
    probe = connections["default"].copy()
    options = probe.settings_dict.setdefault("OPTIONS", {})
    options.pop("pool", None)  # one plain connection, not a pool
    if probe.vendor == "postgresql":
        # libpq counts whole seconds; at least 1. statement_timeout bounds the query itself.
        options["connect_timeout"] = max(1, round(timeout))
        options["options"] = f"{options.get('options', '')} -c statement_timeout={int(timeout * 1000)}".strip()
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return _describe(exc)
    finally:
        probe.close()
    return None


def redis_check(*, timeout: float) -> str | None:
    """None when Redis answers PING, else why not."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return _describe(exc)
    finally:
        client.close()
    return None


def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, {check: "ok" | "not configured" | the reason it failed})."""
    timeout = settings.READINESS_TIMEOUT_SECONDS
    errors = {"database": database_check(timeout=timeout)}
    if settings.REDIS_URL:
        errors["redis"] = redis_check(timeout=timeout)
    checks = {name: error or "ok" for name, error in errors.items()}
    checks.setdefault("redis", "not configured")
    return all(error is None for error in errors.values()), checks
