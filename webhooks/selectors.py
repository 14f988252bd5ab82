"""Reads of webhook ingestion: which stored headers are secret, and an event's history."""

from __future__ import annotations

from collections.abc import Mapping

from payments.models import AuditLog, WebhookEvent
from providers.base import ProviderAdapter

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
