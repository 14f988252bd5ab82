"""Settings, all from the environment (12-factor).

With nothing configured the service runs for development: SQLite, an in-process cache and Celery
tasks run inline. ``APP_ENV=production`` turns on the start-up checks at the bottom of this file,
which refuse to start with DEBUG on or without the secrets.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_ip_networks, env_list, env_str
from config.messages import message_beat_schedule, message_settings
from config.quickbooks_settings import quickbooks_settings
from ops.logs import json_formatter_config

BASE_DIR = Path(__file__).resolve().parent.parent

APP_ENV = (env_str("APP_ENV", "development") or "development").lower()
if APP_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"APP_ENV must be development, test or production, got {APP_ENV!r}")
IS_PRODUCTION = APP_ENV == "production"

# Development-only values. They are public (they are in this file), so production refuses them.
_DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
_DEV_FIELD_ENCRYPTION_KEY = "oKKGUumRSo3Q7uw3gd4evOaRrr1xgbOGJXr9HjXSas8="

DEBUG = env_bool("DEBUG", default=not IS_PRODUCTION)
SECRET_KEY = env_str("SECRET_KEY") or ("" if IS_PRODUCTION else _DEV_SECRET_KEY)
# Fernet keys, comma-separated: the first encrypts, all decrypt (so keys can be rotated).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS") or (
    [] if IS_PRODUCTION else [_DEV_FIELD_ENCRYPTION_KEY]
)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The public base URL of this service, used to build links sent to parents and providers.
PUBLIC_BASE_URL = (env_str("PUBLIC_BASE_URL", "http://localhost:8000") or "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "payments",
    "providers",
    "webhooks",
    "directory_client",
    "quickbooks_sync",
    "events",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Before anything that reads the session or the database: see payments/guards.py.
    "payments.guards.RequestGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "payments.middleware.StaffTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: refuses a locked-out login before the view runs.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
            # Off: a check is a second round trip (SELECT 1) before every request's first query.
            # A connection that failed is still checked and replaced: Django closes it at the end
            # of the request that saw the error, so a database restart costs each thread one
            # failed request (a provider retries it), not a round trip on every request.
            conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", False),
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Parameters travel apart from the SQL text instead of being escaped into it: cheaper
        # for the ~1 KB raw webhook body stored with every event.
        DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env_bool(
            "DB_SERVER_SIDE_BINDING", True
        )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # Inline tasks write from the request thread while runserver serves other
            # threads; wait for SQLite's lock instead of failing at once.
            "OPTIONS": {"timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache and Celery broker ------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "sp",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# The rate limiters' counts (payments.ratelimits): in Redis, shared by every replica, with short
# timeouts and this process's memory while Redis is unreachable (config.cache).
CACHES["ratelimit"] = (
    {
        "BACKEND": "config.cache.RedisWithLocalFallbackCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sp",
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"}
)

# In-memory broker when tasks run inline; Celery still builds a producer, which wants a host.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
# No Redis configured: run tasks inline, in the process that enqueues them (development only).
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A webhook must be answered even when Redis is down: fail a publish fast and let the sweep
# enqueue what was stored (webhooks.tasks.webhook_events_sweep).
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 2}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Backoff of task retries: about base * 2^attempt seconds, with jitter.
TASK_RETRY_BASE_SECONDS = float(env_str("TASK_RETRY_BASE_SECONDS", "30") or 30)
CELERY_BEAT_SCHEDULE = {
    "webhook-events-sweep": {
        "task": "webhooks.tasks.webhook_events_sweep",
        "schedule": env_int("WEBHOOK_SWEEP_INTERVAL_SECONDS", 60),
    },
}

# --- Webhooks ---------------------------------------------------------------------------------
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 256 * 1024)
# Risk scoring (payments/risk.py): a school without its own threshold flags payments scoring this
# or more (0-100).
HIGH_RISK_THRESHOLD = min(100, max(1, env_int("HIGH_RISK_THRESHOLD", 70)))
# Let the view see bodies up to its own limit and answer 413 itself.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(WEBHOOK_MAX_BODY_BYTES * 2, 2_621_440)
# How long a process may reuse a provider account it looked up (secrets, active flags).
WEBHOOK_ACCOUNT_CACHE_SECONDS = env_int("WEBHOOK_ACCOUNT_CACHE_SECONDS", 5)
# An event stored but not processed after this long is enqueued again by the sweep.
WEBHOOK_SWEEP_AFTER_SECONDS = env_int("WEBHOOK_SWEEP_AFTER_SECONDS", 120)
# A claim on an event older than this is considered abandoned (worker died mid-task).
WEBHOOK_CLAIM_TIMEOUT_SECONDS = env_int("WEBHOOK_CLAIM_TIMEOUT_SECONDS", 600)
# The proxies in front of this service (the ingress), as addresses or CIDR networks. A request
# whose peer is one of them is from the client X-Forwarded-For names (webhooks/client_ip.py);
# empty: REMOTE_ADDR is the client and X-Forwarded-For is ignored (anyone can send one).
TRUSTED_PROXIES = env_ip_networks("TRUSTED_PROXIES")

# --- School Directory API (student mapping) --------------------------------------------------
# In development the defaults point at the local stand-in that `make run` starts (fakes/).
_LOCAL_FAKES = APP_ENV == "development"
FAKES_BASE_URL = f"http://127.0.0.1:{env_int('FAKES_PORT', 8001)}"
SCHOOL_API_BASE_URL = (
    env_str("SCHOOL_API_BASE_URL") or (f"{FAKES_BASE_URL}/directory" if _LOCAL_FAKES else "")
).rstrip("/")
SCHOOL_API_TOKEN = env_str("SCHOOL_API_TOKEN") or ("demo-directory-token" if _LOCAL_FAKES else "")
SCHOOL_API_TIMEOUT_SECONDS = float(env_str("SCHOOL_API_TIMEOUT_SECONDS", "5") or 5)
SCHOOL_API_ATTEMPTS = env_int("SCHOOL_API_ATTEMPTS", 3)

# --- Payment providers' APIs -----------------------------------------------------------
# Each defaults to the provider's real host; in development to the local fakes that `make run`
# serves on FAKES_PORT (fakes/app.py), so checkout and status calls work with no outside service.


def _provider_api_base_url(name: str, real_host: str, fake_prefix: str) -> str:
    fake = f"{FAKES_BASE_URL}/{fake_prefix}" if _LOCAL_FAKES else real_host
    return (env_str(name) or fake).rstrip("/")


STRIPE_API_BASE_URL = _provider_api_base_url("STRIPE_API_BASE_URL", "https://api.stripe.com", "stripe")
PAYSTACK_API_BASE_URL = _provider_api_base_url("PAYSTACK_API_BASE_URL", "https://api.paystack.co", "paystack")
# Daraja has two hosts; an account in test mode uses the sandbox.
MPESA_API_BASE_URL = _provider_api_base_url("MPESA_API_BASE_URL", "https://api.safaricom.co.ke", "mpesa")
MPESA_SANDBOX_API_BASE_URL = _provider_api_base_url(
    "MPESA_SANDBOX_API_BASE_URL", "https://sandbox.safaricom.co.ke", "mpesa"
)
# Daraja documents the Timestamp's format but not its zone; Safaricom's own Node library uses UTC.
MPESA_TIMESTAMP_TIMEZONE = env_str("MPESA_TIMESTAMP_TIMEZONE", "UTC") or "UTC"
CHAPA_API_BASE_URL = _provider_api_base_url("CHAPA_API_BASE_URL", "https://api.chapa.co", "chapa")
FLUTTERWAVE_API_BASE_URL = _provider_api_base_url(
    "FLUTTERWAVE_API_BASE_URL", "https://api.flutterwave.com", "flutterwave"
)
OMISE_API_BASE_URL = _provider_api_base_url("OMISE_API_BASE_URL", "https://api.omise.co", "omise")
# PayPal has two hosts too; an account in test mode uses the sandbox.
PAYPAL_API_BASE_URL = _provider_api_base_url("PAYPAL_API_BASE_URL", "https://api-m.paypal.com", "paypal")
PAYPAL_SANDBOX_API_BASE_URL = _provider_api_base_url(
    "PAYPAL_SANDBOX_API_BASE_URL", "https://api-m.sandbox.paypal.com", "paypal"
)


# --- Parents pay: pay links, checkout, manual payments, the janitor, the REST API ------
# API tokens are django-rest-knox's: only a digest is stored (payments/api/authentication.py).
INSTALLED_APPS += ["rest_framework", "knox", "drf_spectacular", "drf_spectacular_sidecar"]
# Receipts uploaded with manual payments. Never served publicly: staff download them through admin
# (payments.admin's receipt view). Production keeps them in an S3 bucket, which every replica
# shares and which outlives the pods (their root filesystem is read-only); development and tests
# on the local disk. See "Uploaded receipts" in docs/operations.md.
MEDIA_ROOT = env_str("MEDIA_ROOT", str(BASE_DIR / "media"))
MEDIA_URL = "/media/"
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME") or ""
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if AWS_STORAGE_BUCKET_NAME:
    from botocore.config import Config as _BotoConfig

    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            # Unset: boto3's own chain (AWS_REGION; on EKS the pod's IAM role gives credentials).
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            # Another S3-compatible store (MinIO, Ceph, ...); unset for Amazon S3.
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "location": (env_str("AWS_S3_PREFIX") or "").strip("/"),
            # Private: no ACL is sent (the bucket's owner-enforced default), and URLs, were any
            # ever made, are signed and short-lived. Staff get files through the app.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": 300,
            "file_overwrite": False,
            "client_config": _BotoConfig(
                connect_timeout=env_int("AWS_S3_CONNECT_TIMEOUT_SECONDS", 5),
                read_timeout=env_int("AWS_S3_READ_TIMEOUT_SECONDS", 30),
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        },
    }
MANUAL_RECEIPT_MAX_BYTES = env_int("MANUAL_RECEIPT_MAX_BYTES", 5 * 1024 * 1024)
# At most this many manual payments of one request may wait for review at once.
MANUAL_PAYMENTS_PENDING_MAX = env_int("MANUAL_PAYMENTS_PENDING_MAX", 3)
# A second "Pay now" while the first is still asking the provider waits up to this long to reuse
# its checkout; an intent whose checkout never came back after CHECKOUT_STALE_SECONDS is dropped.
# The dummy provider's checkout (a page where anyone holding the link "pays" without money) is for
# development and demos; off in production unless switched on deliberately (a staging stand-in).
DUMMY_CHECKOUT_ENABLED = env_bool("DUMMY_CHECKOUT_ENABLED", default=not IS_PRODUCTION)
CHECKOUT_WAIT_SECONDS = float(env_str("CHECKOUT_WAIT_SECONDS", "15") or 15)
CHECKOUT_STALE_SECONDS = env_int("CHECKOUT_STALE_SECONDS", 120)
# The janitor asks the provider about a payment still open this long after its checkout started
# (default 5 minutes, 1 hour, 1 day); still open after the last one, it expires.
PAYMENT_RECHECK_SCHEDULE_SECONDS = [
    int(value) for value in env_list("PAYMENT_RECHECK_SCHEDULE_SECONDS", ["300", "3600", "86400"])
]
PAYMENT_RECHECK_CLAIM_SECONDS = env_int("PAYMENT_RECHECK_CLAIM_SECONDS", 600)
CELERY_BEAT_SCHEDULE["payments-recheck-due"] = {
    "task": "payments.tasks.payments_recheck_due",
    "schedule": env_int("PAYMENT_RECHECK_INTERVAL_SECONDS", 60),
}
# A staff refund still on its way is asked about (where the provider's API can say) this long
# after the provider took it; one whose answer was lost is sent again on the same steps, only where
# the provider honours the idempotency key, and only while it remembers it.
REFUND_RECHECK_SCHEDULE_SECONDS = [
    int(value)
    for value in env_list("REFUND_RECHECK_SCHEDULE_SECONDS", ["300", "3600", "21600", "86400", "259200", "604800"])
]
CELERY_BEAT_SCHEDULE["refunds-recheck-due"] = {
    "task": "payments.tasks.refund_requests_recheck_due",
    "schedule": env_int("REFUND_RECHECK_INTERVAL_SECONDS", 300),
}

# --- Messages to parents: pay links, reminders, receipts (config/messages.py) ----------------
globals().update(
    message_settings(
        app_env=APP_ENV, local_fakes=_LOCAL_FAKES, fakes_base_url=FAKES_BASE_URL, public_base_url=PUBLIC_BASE_URL
    )
)
CELERY_BEAT_SCHEDULE.update(message_beat_schedule())
REST_FRAMEWORK = {
    # Tokens only: no session cookie authenticates an API call, so the API needs no CSRF token.
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.api.authentication.HashedTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["payments.api.permissions.IsSchoolStaff"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser with the webhook decoder's limits (depth, number sizes, NUL).
    "DEFAULT_PARSER_CLASSES": ["payments.api.parsers.LimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
# Tokens do not expire unless made with an expiry; the header stays "Authorization: Token <key>".
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token"}
SPECTACULAR_SETTINGS = {
    "TITLE": "school-payments API",
    "DESCRIPTION": "Payment requests, checkouts and payments of the caller's own school. "
    "Send `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page loads Swagger UI from this service's own static files (drf-spectacular-sidecar).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


# --- QuickBooks Online (quickbooks_sync) ------------------------------------------------------
# Where payments hands a payment whose held money may have changed: the books apps' entry points
# (dotted paths, each called with payment_ids after commit). Payments imports none of them.
PAYMENT_BOOKS_HOOKS = ["quickbooks_sync.services.qbo_sync_offered"]
globals().update(
    quickbooks_settings(
        local_fakes=_LOCAL_FAKES,
        is_production=IS_PRODUCTION,
        public_base_url=PUBLIC_BASE_URL,
        fakes_base_url=FAKES_BASE_URL,
        database_url=DATABASE_URL,
    )
)
CELERY_BEAT_SCHEDULE.update(BEAT_SCHEDULE)  # noqa: F821 - from quickbooks_settings
del BEAT_SCHEDULE  # noqa: F821

# --- Abuse limits (payments/ratelimits.py; docs/security.md) ---------------------------------------
# Requests per client address (or, for webhook refusals, per account) in a fixed window: "N/s",
# "N/m", "N/h". Generous for the parents' pages: many parents share one carrier-grade NAT address.
RATE_LIMITS = {
    "pay_page": env_str("RATE_LIMIT_PAY_PAGE", "120/m"),  # pay link and thanks pages
    "pay_checkout": env_str("RATE_LIMIT_PAY_CHECKOUT", "30/m"),  # "Pay now", "choose another way"
    "pay_manual": env_str("RATE_LIMIT_PAY_MANUAL", "20/h"),  # manual-payment reports
    # The thanks page polls twice a second for its first 20 s, then every 3 s: room for a few
    # parents behind one address (a school's or a carrier's NAT).
    "payment_status": env_str("RATE_LIMIT_PAYMENT_STATUS", "600/m"),
    # Webhook deliveries refused (authentication failed; per account, or per address without one).
    "webhook_refusals": env_str("RATE_LIMIT_WEBHOOK_REFUSALS", "30/m"),
    "parent_link": env_str("RATE_LIMIT_PARENT_LINK", "10/h"),  # asking for a parent's history link
}
# A parent's history link (payments/services/parents.py): how long it works, and the SMTP timeout
# of the message carrying it (Django's mail API, EMAIL_* settings).
PARENT_LINK_TTL_MINUTES = max(5, env_int("PARENT_LINK_TTL_MINUTES", 24 * 60))
PARENT_LINK_EMAIL_TIMEOUT_SECONDS = env_int("PARENT_LINK_EMAIL_TIMEOUT_SECONDS", 10)
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", True)
# Admin login: django-axes locks a username from one client address after AXES_FAILURE_LIMIT
# failed logins, for AXES_COOLOFF_TIME; a success resets the count. Attempts are kept in the
# database (admin: Axes > Access attempts, where staff can also unlock).
INSTALLED_APPS += ["axes"]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "payments.ratelimits.admin_client_address"
AXES_LOCKOUT_CALLABLE = "payments.ratelimits.admin_login_locked_out"

# --- Auth, i18n, static -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
# The parent pages' languages (docs/parents.md); each school picks its default. The compiled
# catalogues are committed (locale/*/LC_MESSAGES/django.mo): the image needs no gettext.
LANGUAGES = [("en", "English"), ("fr", "Français"), ("sw", "Kiswahili")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
# A new school's time zone (each school has its own: School.time_zone); an IANA name.
SCHOOL_TIME_ZONE = env_str("SCHOOL_TIME_ZONE", TIME_ZONE)
try:
    ZoneInfo(SCHOOL_TIME_ZONE)
except (ZoneInfoNotFoundError, ValueError) as exc:
    raise ImproperlyConfigured(f"SCHOOL_TIME_ZONE must be an IANA time zone name, got {SCHOOL_TIME_ZONE!r}") from exc
# The product's name in the staff pages' header and the browser's title bar.
SITE_NAME = env_str("SITE_NAME", "school-payments")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security in production -------------------------------------------------------------------
# `manage.py check --deploy` is clean with these (tests/test_settings.py).
if IS_PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # The ingress terminates TLS and says so in X-Forwarded-Proto (it sets the header itself,
    # whatever the client sent).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Content-Security-Policy (django-csp) on every page, the parents' and the admin: only this
# origin's scripts, styles and images (none inline), no framing. The API docs page relaxes
# style-src for Swagger UI's inline styles (payments/api/urls.py). Not on webhook answers: JSON
# for a provider, and the path is kept cheap.
INSTALLED_APPS += ["csp"]
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/webhooks/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Ops: probes, metrics, request ids, JSON logs, retention -------------------------
# See "Deployment" in docs/operations.md. ProbeMiddleware answers /healthz, /readyz and /metrics
# before the host check (kubelet and Prometheus reach a pod by its IP); RequestIdMiddleware gives
# each request an id that logs, Celery tasks and the response carry.
INSTALLED_APPS += ["ops"]
MIDDLEWARE = [
    "ops.middleware.RequestIdMiddleware",
    "ops.middleware.HttpMetricsMiddleware",
    "ops.middleware.ProbeMiddleware",
    *MIDDLEWARE,
]

# Providers' deliveries (/api/webhooks/) run through these only (config/wsgi.py): a signed JSON
# POST from a provider has no session, user, CSRF token or page to frame. The request id, the
# metrics, the HTTPS redirect, the NUL guard and the host check still apply.
WEBHOOK_MIDDLEWARE = [
    "ops.middleware.RequestIdMiddleware",
    "ops.middleware.HttpMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "payments.guards.RequestGuardMiddleware",
    "django.middleware.common.CommonMiddleware",
]

# Static files (the admin's) are collected into the image and served by gunicorn through
# WhiteNoise; in development runserver serves them.
SERVE_STATIC = env_bool("SERVE_STATIC", default=IS_PRODUCTION and Path(STATIC_ROOT).is_dir())
if SERVE_STATIC:
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "whitenoise.middleware.WhiteNoiseMiddleware"
    )
# Seconds each readiness check (database, Redis) may take; also bounds the scrape-time queries.
READINESS_TIMEOUT_SECONDS = float(env_str("READINESS_TIMEOUT_SECONDS", "2") or 2)
# When set, /metrics (and a worker's metrics port) require "Authorization: Bearer <token>".
# Required in production: the ingress routes every path, /metrics included, to the web pods.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN") or ""
# How long the database gauges of /metrics (backlogs) are reused between scrapes.
METRICS_DB_CACHE_SECONDS = float(env_str("METRICS_DB_CACHE_SECONDS", "15") or 15)
# A Celery worker serves its metrics and /healthz on this port when set (the image's workers: 9100).
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0) or None
# Stored raw webhook bodies and headers of finished events are deleted after this many days.
WEBHOOK_BODY_RETENTION_DAYS = env_int("WEBHOOK_BODY_RETENTION_DAYS", 90)
CELERY_BEAT_SCHEDULE["webhook-bodies-purge"] = {
    "task": "ops.tasks.webhook_bodies_purge",
    "schedule": crontab(hour=3, minute=17),  # daily, off the hour
}
# Keep Django's LOGGING in the worker (JSON, request ids, redaction) instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# json (one object per line: time, level, logger, message, request_id, extra fields) or plain.
LOG_FORMAT = (env_str("LOG_FORMAT") or ("json" if IS_PRODUCTION else "plain")).lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "ops.logs.RequestContextFilter"},
        "redact_secrets": {"()": "ops.logs.RedactSecretsFilter"},
    },
    "formatters": {
        "json": json_formatter_config(),
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_context", "redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request at INFO; our own code logs what matters.
    # axes.apps announces its version at every start; its failed-login lines (axes.*) stay.
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},
        # Never SQL with its parameters (pay-link tokens, e-mail addresses), even at DEBUG.
        "django.db.backends": {"level": "INFO"},
        # Django's own lines (its request log: "Not Found: <path>"; runserver's request lines under
        # make run) go through the same redaction as everything else, not through Django's
        # default handlers, which write whole URLs.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}


# --- Events out: the outbox relay, Kafka, the schools' endpoints (docs/events.md) ----------------
# Their settings live in config/events_settings.py (the same environment reader), so this file
# stays under the module size limit.
from config import events_settings as _events  # noqa: E402
from config.events_settings import *  # noqa: E402, F403

CELERY_BEAT_SCHEDULE["webhook-deliveries-sweep"] = {
    "task": "events.tasks.endpoint_deliveries_sweep",
    "schedule": env_int("WEBHOOK_SWEEP_INTERVAL_SECONDS", 60),
}


def _check_production_settings() -> None:
    problems = []
    if DEBUG:
        problems.append("DEBUG must be off")
    if not SECRET_KEY or SECRET_KEY == _DEV_SECRET_KEY:
        problems.append("SECRET_KEY must be set")
    if not FIELD_ENCRYPTION_KEYS or _DEV_FIELD_ENCRYPTION_KEY in FIELD_ENCRYPTION_KEYS:
        problems.append("FIELD_ENCRYPTION_KEYS must be set")
    if not DATABASE_URL:
        problems.append("DATABASE_URL must be set")
    if not REDIS_URL:
        problems.append("REDIS_URL must be set")
    if not SCHOOL_API_BASE_URL or not SCHOOL_API_TOKEN:
        problems.append("SCHOOL_API_BASE_URL and SCHOOL_API_TOKEN must be set")
    if not (QBO_API_BASE_URL.startswith("https://") and QBO_OAUTH_DISCOVERY_URL.startswith("https://")):
        problems.append("QBO_API_BASE_URL and QBO_OAUTH_DISCOVERY_URL must be https")
    if not METRICS_BEARER_TOKEN:
        problems.append("METRICS_BEARER_TOKEN must be set")
    if not AWS_STORAGE_BUCKET_NAME and env_str("MEDIA_ROOT") is None:
        # The image's own disk is read-only and not shared: receipts need a bucket (or, off
        # Kubernetes, a MEDIA_ROOT on a volume every process shares).
        problems.append("AWS_STORAGE_BUCKET_NAME (or MEDIA_ROOT on a shared volume) must be set")
    if _events.OUTBOUND_WEBHOOK_ALLOW_HTTP or _events.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        problems.append("OUTBOUND_WEBHOOK_ALLOW_HTTP and OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES must be off")
    if problems:
        raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(problems))


if IS_PRODUCTION:
    _check_production_settings()

# --- Error reporting (Sentry) -------------------------------------------------------------------
# Off unless SENTRY_DSN is set. Events carry the request id and are redacted like the logs; no
# request bodies, local variables or personal data are sent (ops/errors.py).
SENTRY_DSN = env_str("SENTRY_DSN") or ""
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT") or APP_ENV
SENTRY_RELEASE = env_str("SENTRY_RELEASE") or None
SENTRY_TRACES_SAMPLE_RATE = float(env_str("SENTRY_TRACES_SAMPLE_RATE", "0") or 0)
if SENTRY_DSN:
    from ops.errors import error_reporting_init

    error_reporting_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        release=SENTRY_RELEASE,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )
