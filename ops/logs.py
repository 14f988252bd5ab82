"""Logging: request ids on every record, and secrets never written out.

Both are logging *filters*, attached to the handlers in ``settings.LOGGING`` (a handler's filters
see every record that reaches it, from any logger). They run only for records that are actually
emitted, so they cost nothing on a request that logs nothing.

``RedactSecretsFilter`` masks, in the message, its arguments, ``extra`` fields and the formatted
traceback:

- values under secret-bearing keys or headers (signatures, ``Authorization``, cookies, tokens,
  API keys, passwords, secrets, passkeys, credentials), in dicts, and in text written as
  ``key=value``, ``key: value`` or ``"key": "value"``;
- ``Bearer``/``Basic`` credentials anywhere;
- the password in a URL (``postgres://user:password@host``);
- URLs: every query string (M-Pesa's callback token ``?t=``, QuickBooks' OAuth ``code`` and
  ``state``, anything a client adds) and the pay-link token in ``/pay/<token>/`` (``mask_path``).

gunicorn's access log, when switched on, writes paths through ``mask_path`` too
(``config/gunicorn_logging.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

from ops.context import request_id_var, task_var

REDACTED = "[REDACTED]"

# A key (dict key, header name, "key=" in text) is secret-bearing when, lower-cased with "-"
# read as "_", it contains one of these.
SECRET_KEY_PARTS = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "passkey",
    "token",
    "signature",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    "verif_hash",  # Flutterwave's webhook header
    "encryption_key",
    "sessionid",
)


def is_secret_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    normalized = key.lower().replace("-", "_")
    return any(part in normalized for part in SECRET_KEY_PARTS)


_KEY_WORDS = "|".join(re.escape(part).replace("_", "[_-]?") for part in SECRET_KEY_PARTS)
# key (maybe quoted) then = or : then the value (maybe quoted; "Bearer x" taken whole).
_KEY_VALUE = re.compile(
    r"""(?P<key>["']?[\w-]*(?:%s)[\w-]*["']?\s*[:=]\s*)(?P<quote>["']?)"""
    r"""(?P<value>(?:(?:bearer|basic|token)\s+)?[^\s"';&}\]]+)""" % _KEY_WORDS,
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>bearer|basic)\s+(?P<value>[A-Za-z0-9._~+/=-]{6,})", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<value>[^/\s@]+)(?=@)", re.IGNORECASE)


# A path segment that is a secret in itself: the pay link's token (192 random bits).
_PATH_TOKEN = re.compile(r"(?P<head>/pay/)(?P<value>[^/\s?#\"']+)")
# A query string after a path or URL, up to the next space or quote.
_QUERY = re.compile(r"(?P<head>(?:[a-z][a-z0-9+.-]*://[^/\s?\"']+)?/[^\s?\"']*)\?(?P<value>[^\s\"'<>]+)", re.IGNORECASE)
QUERY_MASK = "?[query]"
PATH_TOKEN_MASK = "[token]"


def mask_path(path: str) -> str:
    """A path (or text with paths in it) without query strings, pay-link tokens masked:
    ``/pay/<token>/checkout?x=1`` -> ``/pay/[token]/checkout?[query]``."""
    if not path:
        return path
    path = _QUERY.sub(lambda m: m.group("head") + QUERY_MASK, path)
    return _PATH_TOKEN.sub(lambda m: m.group("head") + PATH_TOKEN_MASK, path)


def redact_text(text: str) -> str:
    """Mask secrets in free text (messages, exception messages, tracebacks)."""
    if not text:
        return text
    text = mask_path(text)
    text = _KEY_VALUE.sub(lambda m: m.group("key") + m.group("quote") + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    return _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets masked: mappings by key, lists, tuples and sets item by
    item, strings by ``redact_text``. Other objects are returned as they are."""
    if _depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_key(key) else redact(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(redact(item, _depth + 1) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value), _depth + 1)
    return value


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_OWN_ATTRS = {"request_id", "task_id", "task_name"}


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` (and ``task_id``, ``task_name`` inside a Celery task) to every record.

    Django logs a 4xx or 5xx answer ("Not Found: /x", from ``django.request``) after the
    middleware has returned, when the request's context is already reset; such a record carries
    the request itself, which carries its id (set by RequestIdMiddleware)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (
            request_id_var.get()
            or getattr(getattr(record, "request", None), "request_id", None)
            or getattr(record, "request_id", None)  # set by this filter for an earlier handler
        )
        task = task_var.get()
        if task is not None:
            record.task_id, record.task_name = task
        return True


class RedactSecretsFilter(logging.Filter):
    """Masks secrets in a record before any formatter sees it (see the module docstring).

    The message is rendered once here (``msg % args``) and its text redacted, so a secret passed
    as an argument is caught whatever its type; the traceback is formatted here and redacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_secrets_redacted", False):
            return True  # a second handler sees the same record
        if isinstance(record.msg, Mapping):
            record.msg = redact(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken format string is shown, not raised
                message = f"{record.msg!r} {record.args!r}"
            record.msg, record.args = redact_text(message), ()
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD_ATTRS or key in _OWN_ATTRS or key.startswith("_"):
                continue
            if key == "request" and hasattr(value, "method"):
                # Django's request loggers pass the HttpRequest; only its method and path are
                # logged (its headers and body may carry credentials).
                record.request = f"{value.method} {mask_path(getattr(value, 'path', ''))}"
            else:
                record.__dict__[key] = REDACTED if is_secret_key(key) else redact(value)
        if record.exc_info:
            formatter = logging.Formatter()
            record.exc_text = redact_text(formatter.formatException(record.exc_info))
            record.exc_info = None  # formatters print exc_text instead
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._secrets_redacted = True
        return True


def json_formatter_config() -> dict[str, Any]:
    """The JSON formatter (python-json-logger) of ``settings.LOGGING``: one JSON object per
    line with time, level, logger, message, request id, and any ``extra`` fields."""
    return {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "datefmt": "%Y-%m-%dT%H:%M:%S%z",
    }
