"""Reads of webhook ingestion: the account a delivery is for (cached), which stored headers are
secret, and an event's history."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from django.conf import settings

from payments.models import AuditLog, ProviderAccount, WebhookEvent
from providers.base import ProviderAdapter

# (provider, school code) or account id -> (expires at, account or None). The look-up is the most
# expensive step of the webhook request path, and accounts change rarely.
_account_cache: dict[tuple[str, str] | int, tuple[float, ProviderAccount | None]] = {}
_account_cache_lock = threading.Lock()


ACCOUNT_CACHE_MAX_ENTRIES = 4096


def account_for_webhook(*, provider: str, school_code: str) -> ProviderAccount | None:
    """The active account of an active school with that provider, or None.

    Cached in this process for WEBHOOK_ACCOUNT_CACHE_SECONDS; saving an account or school
    clears the cache at once (see ``WebhooksConfig.ready``).
    """
    key = (provider, school_code.strip().lower())
    now = time.monotonic()
    cached = _account_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    account = (
        ProviderAccount.objects.select_related("school")
        .filter(provider=key[0], school__code=key[1], active=True, school__active=True)
        .order_by()
        .first()
    )
    return _account_cache_put(key, account, now)


def _account_cache_put(key, account: ProviderAccount | None, now: float) -> ProviderAccount | None:
    with _account_cache_lock:
        # Bounded: school codes come from requests (header or path), and misses are cached too.
        if len(_account_cache) >= ACCOUNT_CACHE_MAX_ENTRIES:
            _account_cache.clear()
        _account_cache[key] = (now + settings.WEBHOOK_ACCOUNT_CACHE_SECONDS, account)
    return account


def account_of_event(account_id: int) -> ProviderAccount:
    """An event's account with its school, for the worker: cached like ``account_for_webhook``
    (and cleared with it), whether or not the account is still active, since an event stored
    while it was is still processed."""
    now = time.monotonic()
    cached = _account_cache.get(account_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    return _account_cache_put(account_id, ProviderAccount.objects.select_related("school").get(pk=account_id), now)


def account_cache_clear(**_signal_kwargs) -> None:
    with _account_cache_lock:
        _account_cache.clear()


# Never stored with an event: credentials of whoever called us.
UNSTORED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

MASK = "[secret: not shown]"


def header_is_secret(name: str, adapter: ProviderAdapter | None) -> bool:
    """Whether a request header carries a credential: such a header is never stored or shown."""
    lowered = name.lower()
    return lowered in UNSTORED_HEADERS or (adapter is not None and lowered in adapter.secret_headers)


def webhook_event_headers_shown(*, headers: Mapping[str, str], adapter: ProviderAdapter | None) -> dict[str, str]:
    """The stored headers as staff may see them. Events stored before a provider's secret headers
    were known may still hold one: it is masked, not trusted to be absent."""
    return {name: MASK if header_is_secret(name, adapter) else value for name, value in headers.items()}


def webhook_event_history(*, event: WebhookEvent, limit: int = 50) -> list[AuditLog]:
    """The audit entries about this event (failures, replays), oldest first."""
    entries = AuditLog.objects.filter(target_type=WebhookEvent.__name__, target_id=str(event.pk)).order_by(
        "-created_at", "-id"
    )[:limit]
    return list(reversed(entries))


def storable_headers(headers: Mapping[str, str], adapter: ProviderAdapter) -> dict[str, str]:
    """A delivery's headers as stored with its event: without the secret ones."""
    return {name: value for name, value in headers.items() if not header_is_secret(name, adapter)}
