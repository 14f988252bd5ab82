"""The explicit registry: provider slug -> adapter class (dotted path, imported lazily).

Adding a provider is one package (``providers/<slug>/``, see docs/adding-a-provider.md) and one
line here; nothing in ``webhooks`` or ``payments`` changes. The line names the class as
``<package>.<Class>``: the package's other parts (``wire``, ``fake``) are found from it, by the
simulator, the development fakes and the tests.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from types import ModuleType

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
    "paypal": "providers.paypal.PayPalProvider",
}


def provider_slugs() -> list[str]:
    return sorted(PROVIDERS)


@cache
def _load(slug: str) -> ProviderAdapter:
    return import_string(PROVIDERS[slug])()


def _slug(slug: str) -> str:
    normalized = (slug or "").strip().lower()
    if normalized not in PROVIDERS:
        raise UnknownProvider(slug)
    return normalized


def get_provider(slug: str) -> ProviderAdapter:
    """The adapter for ``slug`` (case-insensitive). Raises ``UnknownProvider``."""
    return _load(_slug(slug))


def provider_package(slug: str) -> str:
    """The package the provider lives in (``providers.stripe``): its registry line's module."""
    return PROVIDERS[_slug(slug)].rpartition(".")[0]


def provider_part(slug: str, part: str) -> ModuleType | None:
    """The module ``part`` of the provider's package (``wire``, ``fake``), or None when the
    package has none (surepay and dummy have no fake: nothing outside this service to imitate)."""
    name = f"{provider_package(slug)}.{part}"
    try:
        return import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the part exists but imports something missing
        return None
