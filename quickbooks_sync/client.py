"""The two Intuit libraries, set up the way this service needs them.

``intuit-oauth``'s ``AuthClient`` is a ``requests.Session`` with no timeout: ``TimeoutAuthClient``
gives every discovery, token and revoke call one. It reads its endpoints from the discovery
document at ``QBO_OAUTH_DISCOVERY_URL`` (docs/reference/quickbooks.md §7).

``python-quickbooks``' ``QuickBooks`` sends every request through ``process_request`` and
neither sets a timeout nor shows the HTTP status (a 429 comes back as a fault 3001, reference
§4.2). ``QboClient`` overrides that one method (§6.7): it takes a slot from the shared
per-company limiter before sending, adds the timeout, turns 429/401/5xx and network errors into
this app's exceptions before the library parses anything, and pauses the company after a 429.
``handle_exceptions`` is guarded against a fault without a code (§6.6, a ``TypeError`` there).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
import requests
from django.conf import settings
from intuitlib.client import AuthClient
from intuitlib.exceptions import AuthClientError
from quickbooks import QuickBooks
from quickbooks import exceptions as qb_exceptions
from quickbooks.mixins import DecimalEncoder
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from quickbooks_sync.coordination import coordinator
from quickbooks_sync.errors import (
    QboAuthError,
    QboDuplicateRequest,
    QboFault,
    QboNotConfigured,
    QboThrottled,
    QboUnavailable,
)

logger = logging.getLogger(__name__)


def _timeout() -> tuple[float, float]:
    return (settings.QBO_CONNECT_TIMEOUT_SECONDS, settings.QBO_READ_TIMEOUT_SECONDS)


class TimeoutAuthClient(AuthClient):
    """``AuthClient`` whose every HTTP call (discovery, token, revoke) has a timeout."""

    def __init__(self, *args, timeout: tuple[float, float], **kwargs) -> None:
        self._timeout = timeout  # set first: the parent constructor already fetches discovery
        super().__init__(*args, **kwargs)

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def auth_client_build(
    *, access_token: str | None = None, refresh_token: str | None = None, realm_id: str | None = None
) -> TimeoutAuthClient:
    """An ``AuthClient`` for our app. Raises ``QboNotConfigured`` without app keys and
    ``QboUnavailable`` if the discovery document cannot be read."""
    if not settings.QBO_CLIENT_ID or not settings.QBO_CLIENT_SECRET:
        raise QboNotConfigured("QuickBooks is not configured: set QBO_CLIENT_ID and QBO_CLIENT_SECRET")
    try:
        # Any environment other than "sandbox"/"production" is used as the discovery URL (§1.2).
        return TimeoutAuthClient(
            settings.QBO_CLIENT_ID,
            settings.QBO_CLIENT_SECRET,
            settings.QBO_REDIRECT_URI,
            settings.QBO_OAUTH_DISCOVERY_URL,
            access_token=access_token or None,
            refresh_token=refresh_token or None,
            realm_id=realm_id or None,
            timeout=_timeout(),
        )
    except AuthClientError as exc:
        raise QboUnavailable(
            f"Intuit's discovery document answered HTTP {exc.status_code}", outcome_unknown=False
        ) from exc
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise QboUnavailable(
            f"Intuit's discovery document could not be read: {type(exc).__name__}", outcome_unknown=False
        ) from exc


def oauth_error(exc: AuthClientError) -> str:
    """The ``error`` of a refused token call (``invalid_grant``, ``invalid_client``, ...)."""
    try:
        return str(json.loads(exc.content or b"{}").get("error", "")) or f"HTTP {exc.status_code}"
    except (ValueError, AttributeError):
        return f"HTTP {exc.status_code}"


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before a byte of the request left (refused, DNS, connect
    timeout): then the request certainly did not reach QuickBooks."""
    pending, seen = [exc], set()
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, (NewConnectionError, ConnectTimeoutError)):
            return True
        linked = [*cause.args, getattr(cause, "reason", None), cause.__cause__, cause.__context__]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return False


def _auth_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    fault = body.get("fault") or body.get("Fault") or {}
    errors = fault.get("error") or fault.get("Error") or [{}]
    first = errors[0] if errors else {}
    return str(first.get("detail") or first.get("Detail") or first.get("message") or first.get("Message") or "HTTP 401")


class QboClient(QuickBooks):
    """``QuickBooks`` with limits, timeouts and status codes (see the module docstring)."""

    last_intuit_tid = ""

    def process_request(self, request_type, url, headers="", params="", data=""):
        if self.session is None:
            raise qb_exceptions.QuickbooksException("No session manager")
        headers.update({"Authorization": "Bearer " + self.session.access_token})
        realm = str(self.company_id)
        limiter = coordinator()
        try:
            slot = limiter.acquire_slot(realm, batch=url.endswith("/batch"))
        except redis.RedisError as exc:
            # Without the shared limiter nothing may be sent: the limits would be guesswork.
            raise QboUnavailable(
                f"the shared rate limiter is unavailable ({type(exc).__name__})", outcome_unknown=False
            ) from exc
        try:
            response = self.session.request(
                request_type, url, headers=headers, params=params, data=data, timeout=_timeout()
            )
        except requests.ConnectionError as exc:
            never_sent = _never_sent(exc)
            raise QboUnavailable(
                f"QuickBooks could not be reached ({type(exc).__name__})"
                if never_sent
                else f"the connection to QuickBooks broke before it answered ({type(exc).__name__})",
                outcome_unknown=not never_sent,
            ) from exc
        except requests.Timeout as exc:
            raise QboUnavailable("QuickBooks did not answer in time", outcome_unknown=True) from exc
        finally:
            try:
                limiter.release_slot(realm, slot)
            except redis.RedisError:
                logger.warning("could not release a limiter slot of company %s; it expires by itself", realm)
        tid = response.headers.get("intuit_tid", "")
        self.last_intuit_tid = tid
        if response.status_code == 429:
            pause = settings.QBO_THROTTLE_PAUSE_SECONDS / settings.QBO_LIMIT_TIME_SCALE
            limiter.pause(realm, pause)
            logger.warning("QuickBooks throttled company %s (intuit_tid %s); pausing %.0f s", realm, tid, pause)
            raise QboThrottled(
                "QuickBooks answered 429 (too many requests)", retry_after=pause, sent=True, intuit_tid=tid
            )
        if response.status_code == 401:
            raise QboAuthError(f"QuickBooks refused the access token: {_auth_detail(response)}", intuit_tid=tid)
        if response.status_code >= 500:
            raise QboUnavailable(
                f"QuickBooks answered HTTP {response.status_code}", outcome_unknown=True, intuit_tid=tid
            )
        return response

    @staticmethod
    def handle_exceptions(results):
        # A fault error without a code makes the library crash on ``0 < ""`` (docs/reference/quickbooks.md §6.6).
        for error in results.get("Error") or [{}]:
            if not str(error.get("code", "")).strip().isdigit():
                raise qb_exceptions.QuickbooksException(
                    error.get("Message", "QuickBooks fault"), 0, error.get("Detail", "")
                )
        QuickBooks.handle_exceptions(results)


def fault_from(exc: qb_exceptions.QuickbooksException, *, intuit_tid: str = "") -> Exception:
    """Map a python-quickbooks exception (a QBO fault) onto this app's vocabulary."""
    code = int(exc.error_code or 0)
    message, detail = str(exc.message or ""), str(exc.detail or "")
    if code == 3001:
        return QboThrottled(
            message,
            retry_after=settings.QBO_THROTTLE_PAUSE_SECONDS / settings.QBO_LIMIT_TIME_SCALE,
            sent=True,
            intuit_tid=intuit_tid,
        )
    if code in (100, 120, 3200):
        return QboAuthError(f"{message}: {detail}".strip(": "), intuit_tid=intuit_tid)
    if code == 600:
        return QboDuplicateRequest(message, code=str(code), detail=detail, intuit_tid=intuit_tid)
    if code >= 10000:
        # A server error, or a body that was not JSON: nothing says whether a create landed.
        return QboUnavailable(
            f"QuickBooks answered an error ({message[:200]})", outcome_unknown=True, intuit_tid=intuit_tid
        )
    return QboFault(message, code=str(code) if code else "", detail=detail, intuit_tid=intuit_tid)


def item_fault(fault: dict) -> Exception:
    """One batch item's ``Fault`` (a batch call answers 200 with a fault per refused item) in
    this app's vocabulary, as ``fault_from`` maps a call's."""
    try:
        QboClient.handle_exceptions(fault)
    except qb_exceptions.QuickbooksException as exc:
        return fault_from(exc)
    return QboFault("QuickBooks refused the document without saying why")


def qbo_client_build(*, realm_id: str, access_token: str, refresh_token: str) -> QboClient:
    """A client for one company with a current access token (so the library does not refresh,
    docs/reference/quickbooks.md §6.1). Amounts are exact ``Decimal``s both ways (``use_decimal``)."""
    auth = auth_client_build(access_token=access_token, refresh_token=refresh_token, realm_id=realm_id)
    client = QboClient(
        auth_client=auth,
        refresh_token=refresh_token,
        company_id=realm_id,
        minorversion=settings.QBO_MINOR_VERSION,
        use_decimal=True,
    )
    # With a discovery URL as environment the library picks the production host; ours wins.
    client.sandbox = False
    client.api_url_v3 = settings.QBO_API_BASE_URL
    return client


def body_json(body: dict[str, Any]) -> str:
    return json.dumps(body, cls=DecimalEncoder, sort_keys=True)
