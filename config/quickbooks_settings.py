"""The settings of the QuickBooks sync (quickbooks_sync; docs/quickbooks.md, every variable in
docs/configuration.md). Kept apart from ``config/settings.py``, which takes them with
``globals().update(quickbooks_settings(...))`` and adds ``BEAT_SCHEDULE`` to Celery beat's."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_str


def quickbooks_settings(
    *, local_fakes: bool, is_production: bool, public_base_url: str, fakes_base_url: str, database_url: str
) -> dict[str, Any]:
    _LOCAL_FAKES, IS_PRODUCTION, PUBLIC_BASE_URL, FAKES_BASE_URL, DATABASE_URL = (  # their names in settings
        local_fakes, is_production, public_base_url, fakes_base_url, database_url,
    )  # fmt: skip
    # OAuth app keys from developer.intuit.com. Production has no default: without them "Connect to
    # QuickBooks" tells staff that QuickBooks is not configured. In development the defaults point
    # at the local fake QuickBooks that `make run` serves (fakes/quickbooks/) and its demo keys.
    QBO_CLIENT_ID = env_str("QBO_CLIENT_ID") or ("demo-qbo-client" if _LOCAL_FAKES else "")
    QBO_CLIENT_SECRET = env_str("QBO_CLIENT_SECRET") or ("demo-qbo-secret" if _LOCAL_FAKES else "")
    QBO_ENVIRONMENT = (env_str("QBO_ENVIRONMENT") or ("production" if IS_PRODUCTION else "sandbox")).lower()
    if QBO_ENVIRONMENT not in {"sandbox", "production"}:
        raise ImproperlyConfigured(f"QBO_ENVIRONMENT must be sandbox or production, got {QBO_ENVIRONMENT!r}")
    QBO_REDIRECT_URI = env_str("QBO_REDIRECT_URI") or f"{PUBLIC_BASE_URL}/qbo/callback/"
    # docs/reference/quickbooks.md §1.1 and §2.1: the discovery document names Intuit's OAuth endpoints; only the data
    # host differs between sandbox and production.
    QBO_API_BASE_URL = (
        env_str("QBO_API_BASE_URL")
        or (f"{FAKES_BASE_URL}/qbo/v3" if _LOCAL_FAKES else "")
        or {"sandbox": "https://sandbox-quickbooks.api.intuit.com/v3", "production": "https://quickbooks.api.intuit.com/v3"}[
            QBO_ENVIRONMENT
        ]
    ).rstrip("/")
    QBO_OAUTH_DISCOVERY_URL = (
        env_str("QBO_OAUTH_DISCOVERY_URL")
        or (f"{FAKES_BASE_URL}/qbo/.well-known/openid_configuration" if _LOCAL_FAKES else "")
        or {
            "sandbox": "https://developer.intuit.com/.well-known/openid_sandbox_configuration/",
            "production": "https://developer.intuit.com/.well-known/openid_configuration/",
        }[QBO_ENVIRONMENT]
    )
    QBO_MINOR_VERSION = env_int("QBO_MINOR_VERSION", 75)
    # Every outbound call has a timeout: (connect, read) seconds. Intuit cuts requests at 120 s.
    QBO_CONNECT_TIMEOUT_SECONDS = float(env_str("QBO_CONNECT_TIMEOUT_SECONDS", "5") or 5)
    QBO_READ_TIMEOUT_SECONDS = float(env_str("QBO_READ_TIMEOUT_SECONDS", "30") or 30)
    # Per-company limits (docs/reference/quickbooks.md §4.1), enforced before sending by a limiter shared through Redis.
    # QBO_LIMIT_MARGIN_MS lengthens our windows (a second counts as 1.1 s, a minute as 60.1 s) so
    # that network jitter between our clock and Intuit's never turns into a 429.
    # QBO_LIMIT_TIME_SCALE > 1 shrinks the windows (the benchmark runs the fake's clock faster);
    # leave it at 1.
    QBO_LIMIT_PER_MINUTE = env_int("QBO_LIMIT_PER_MINUTE", 500)
    QBO_LIMIT_PER_SECOND = env_int("QBO_LIMIT_PER_SECOND", 10)
    QBO_LIMIT_CONCURRENT = env_int("QBO_LIMIT_CONCURRENT", 10)
    QBO_LIMIT_BATCH_PER_MINUTE = env_int("QBO_LIMIT_BATCH_PER_MINUTE", 40)
    QBO_LIMIT_MARGIN_MS = float(env_str("QBO_LIMIT_MARGIN_MS", "100") or 100)
    QBO_LIMIT_TIME_SCALE = float(env_str("QBO_LIMIT_TIME_SCALE", "1") or 1)
    QBO_LIMIT_MAX_WAIT_SECONDS = float(env_str("QBO_LIMIT_MAX_WAIT_SECONDS", "30") or 30)
    # After a 429, the whole company waits this long (Intuit: 60 s).
    QBO_THROTTLE_PAUSE_SECONDS = float(env_str("QBO_THROTTLE_PAUSE_SECONDS", "60") or 60)
    # Refresh the access token when it has less than this left (it lives one hour).
    QBO_TOKEN_REFRESH_MARGIN_SECONDS = env_int("QBO_TOKEN_REFRESH_MARGIN_SECONDS", 300)
    # Sync: documents per round (one invoice look-up serves a whole round), attempts before a
    # transient failure is left visibly failed, how long a worker's claim on a document lasts.
    QBO_SYNC_CHUNK_SIZE = env_int("QBO_SYNC_CHUNK_SIZE", 120)
    QBO_SYNC_MAX_ATTEMPTS = env_int("QBO_SYNC_MAX_ATTEMPTS", 10)
    QBO_SYNC_CLAIM_SECONDS = env_int("QBO_SYNC_CLAIM_SECONDS", 300)
    QBO_SYNC_RUN_SECONDS = env_int("QBO_SYNC_RUN_SECONDS", 120)
    # Documents of one round sent at once (threads of the worker; the limiter still caps the
    # company's concurrent requests). 1 with SQLite, which cannot take parallel writers.
    QBO_SYNC_CONCURRENCY = env_int("QBO_SYNC_CONCURRENCY", 4 if DATABASE_URL else 1)
    # Documents sent in one batch call (docs/reference/quickbooks.md §6.5): at most 30, Intuit's
    # recommendation; 1 sends every document on its own. Batches drain a backlog 2.4 times faster
    # than single calls within the company's limits (40 batch calls or 500 calls a minute).
    QBO_SYNC_BATCH_SIZE = max(1, min(30, env_int("QBO_SYNC_BATCH_SIZE", 30)))
    if not IS_PRODUCTION and (QBO_API_BASE_URL.startswith("http://")):
        # docs/reference/quickbooks.md §6.2: python-quickbooks' OAuth2Session refuses plain http. Only ever for a local
        # fake; production refuses such URLs below.
        import os as _os

        _os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
    BEAT_SCHEDULE = {}
    BEAT_SCHEDULE["qbo-backlog-scan"] = {
        "task": "quickbooks_sync.tasks.qbo_backlog_scan",
        "schedule": env_int("QBO_SCAN_INTERVAL_SECONDS", 60),
    }
    BEAT_SCHEDULE["qbo-tokens-keepalive"] = {
        "task": "quickbooks_sync.tasks.qbo_tokens_keepalive",
        "schedule": 3600,
    }
    return {name: value for name, value in locals().items() if name.isupper() and not name.startswith("_")}
