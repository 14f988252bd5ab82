"""All local fakes on one port, each under its own path prefix. Used by ``make run``
(``manage.py rundemo``), ``python -m fakes`` and docker-compose-dev."""

from __future__ import annotations

from fakes.chapa import FakeChapa
from fakes.directory import FakeDirectory
from fakes.flutterwave import FakeFlutterwave
from fakes.mpesa import FakeDaraja
from fakes.omise import FakeOmise
from fakes.paystack import FakePaystack
from fakes.quickbooks import build_demo_quickbooks
from fakes.server import PrefixRouter
from fakes.stripe import FakeStripe


def build_fakes(*, public_url: str | None = None) -> PrefixRouter:
    """One router with every fake mounted; add a new fake here with its prefix. ``public_url``:
    where a browser reaches this server, when the service reaches it by another name (compose)."""
    return PrefixRouter(
        {
            "/directory": FakeDirectory(),
            # Payment providers' APIs; each accepts its demo key (see README "Providers").
            "/stripe": FakeStripe(),
            "/paystack": FakePaystack(),
            "/mpesa": FakeDaraja(),
            "/chapa": FakeChapa(),
            "/flutterwave": FakeFlutterwave(),
            "/omise": FakeOmise(),
            "/qbo": build_demo_quickbooks(browser_base_url=f"{public_url.rstrip('/')}/qbo" if public_url else None),
        }
    )
