"""Shared test plumbing for the provider tests: recorded payloads (each provider's
``providers/<slug>/payloads/``, found through the registry), posting a signed delivery through the
real endpoint, a fake provider server on a socket, and the dead-letter check."""

from __future__ import annotations

import json
from contextlib import contextmanager
from decimal import Decimal
from importlib import import_module
from pathlib import Path
from urllib.parse import urlencode

from fakes.server import serve_in_thread
from payments.models import WebhookEvent
from providers.registry import provider_package
from providers.wire import Delivery


def payloads_dir(provider: str) -> Path:
    """The provider's recorded payloads: ``payloads/`` in its package, found through the registry."""
    return Path(import_module(provider_package(provider)).__file__).parent / "payloads"


def load(provider: str, name: str) -> dict:
    """A recorded payload (numbers as Decimal, as the service decodes them)."""
    return json.loads((payloads_dir(provider) / f"{name}.json").read_text(), parse_float=Decimal)


def raw(provider: str, name: str) -> bytes:
    """A recorded payload's bytes exactly as stored (what the provider would send)."""
    return (payloads_dir(provider) / f"{name}.json").read_bytes()


def post(client, provider: str, delivery: Delivery, school: str = "ng"):
    url = f"/api/webhooks/{provider}/{school}"
    if delivery.query:
        url += "?" + urlencode(delivery.query)
    return client.post(url, data=delivery.body, content_type="application/json", headers=delivery.headers)


def accepted(event_id: str) -> tuple[int, dict]:
    return 202, {"detail": "Webhook accepted", "event_id": event_id, "status": "pending"}


def ignored(event_id: str, reason: str) -> tuple[int, dict]:
    """A genuine event with nothing to act on: stored, and a 2xx with the reason."""
    return 200, {"detail": "Webhook ignored", "event_id": event_id, "status": "ignored", "reason": reason}


def duplicate(event_id: str, status: str = "pending") -> tuple[int, dict]:
    return 200, {"detail": "Duplicate webhook ignored", "event_id": event_id, "status": status}


def refused(code: str, detail: str) -> tuple[int, dict]:
    return 401, {"detail": detail, "code": code}


def answer(response) -> tuple[int, dict]:
    return response.status_code, response.json()


def dead_letter() -> WebhookEvent:
    return WebhookEvent.objects.get(status=WebhookEvent.Status.REJECTED)


@contextmanager
def fake_server(fake, settings, *setting_names: str):
    """Serve ``fake`` on a free port and point the named settings at it."""
    server = serve_in_thread(fake)
    for name in setting_names:
        setattr(settings, name, server.base_url)
    try:
        yield fake
    finally:
        server.stop()
