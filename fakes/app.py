"""All local fakes on one port, each under its own path prefix. Used by ``make run``
(``manage.py rundemo``), ``python -m fakes`` and docker-compose-dev."""

from __future__ import annotations

from fakes.africastalking import FakeAfricasTalking
from fakes.directory import FakeDirectory
from fakes.quickbooks import build_demo_quickbooks
from fakes.server import PrefixRouter
from providers.registry import provider_part, provider_slugs


def build_fakes(*, public_url: str | None = None) -> PrefixRouter:
    """One router with every fake mounted. ``public_url``: where a browser reaches this server,
    when the service reaches it by another name (compose)."""
    mounts = {"/directory": FakeDirectory(), "/africastalking": FakeAfricasTalking()}
    # Every registered payment provider's API, from its package's fake.py (``FAKE``), under
    # /<slug>: where the development settings point its API (config/settings.py). Each accepts
    # its demo key (see README "Providers").
    for slug in provider_slugs():
        fake = provider_part(slug, "fake")
        if fake is not None:
            mounts[f"/{slug}"] = fake.FAKE()
            # Its hosted checkout (or M-Pesa's phone) is on this server, where the browser is sent.
            mounts[f"/{slug}"].public_url = f"{public_url.rstrip('/')}/{slug}" if public_url else ""
    mounts["/qbo"] = build_demo_quickbooks(browser_base_url=f"{public_url.rstrip('/')}/qbo" if public_url else None)
    return PrefixRouter(mounts)
