"""The explicit registry: provider slug -> adapter class (dotted path, imported lazily).

Adding a provider is one module and one line here; nothing in ``webhooks`` or ``payments``
changes.
"""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from providers.base import ProviderAdapter
from providers.errors import UnknownProvider

PROVIDERS: dict[str, str] = {
    "surepay": "providers.surepay.SurePayProvider",
    "dummy": "providers.dummy.DummyProvider",
    "stripe": "providers.stripe.StripeProvider",
    "paystack": "providers.paystack.PaystackProvider",
    "mpesa": "providers.mpesa.MpesaProvider",
    "chapa": "providers.chapa.ChapaProvider",
    "flutterwave": "providers.flutterwave.FlutterwaveProvider",
    "omise": "providers.omise.OmiseProvider",
}


def provider_slugs() -> list[str]:
    return sorted(PROVIDERS)


@cache
def _load(slug: str) -> ProviderAdapter:
    return import_string(PROVIDERS[slug])()


def get_provider(slug: str) -> ProviderAdapter:
    """The adapter for ``slug`` (case-insensitive). Raises ``UnknownProvider``."""
    normalized = (slug or "").strip().lower()
    if normalized not in PROVIDERS:
        raise UnknownProvider(slug)
    return _load(normalized)
