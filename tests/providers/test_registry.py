"""Every provider is one registry line, and its API address follows the environment: the real
host in production, the local fakes in development."""

import pytest

from providers.base import ProviderAdapter
from providers.registry import get_provider, provider_slugs
from tests.test_settings import PRODUCTION, load_settings

URL_SETTINGS = {
    "STRIPE_API_BASE_URL": ("https://api.stripe.com", "stripe"),
    "PAYSTACK_API_BASE_URL": ("https://api.paystack.co", "paystack"),
    "MPESA_API_BASE_URL": ("https://api.safaricom.co.ke", "mpesa"),
    "MPESA_SANDBOX_API_BASE_URL": ("https://sandbox.safaricom.co.ke", "mpesa"),
    "CHAPA_API_BASE_URL": ("https://api.chapa.co", "chapa"),
    "FLUTTERWAVE_API_BASE_URL": ("https://api.flutterwave.com", "flutterwave"),
    "OMISE_API_BASE_URL": ("https://api.omise.co", "omise"),
    "PAYPAL_API_BASE_URL": ("https://api-m.paypal.com", "paypal"),
    "PAYPAL_SANDBOX_API_BASE_URL": ("https://api-m.sandbox.paypal.com", "paypal"),
}


def test_the_registry_has_every_provider():
    assert provider_slugs() == ["chapa", "dummy", "flutterwave", "mpesa", "omise", "paypal", "paystack", "stripe", "surepay"]
    for slug in provider_slugs():
        adapter = get_provider(slug.upper())
        assert isinstance(adapter, ProviderAdapter) and adapter.slug == slug


def test_api_addresses_follow_the_environment():
    names = list(URL_SETTINGS)
    expression = "[" + ", ".join(f"settings.{name}" for name in names) + "]"
    production = load_settings(expression, **PRODUCTION)
    assert production.returncode == 0, production.stderr
    assert eval(production.stdout) == [URL_SETTINGS[name][0] for name in names]
    development = load_settings(expression, APP_ENV="development", FAKES_PORT="8111")
    assert eval(development.stdout) == [f"http://127.0.0.1:8111/{URL_SETTINGS[name][1]}" for name in names]
    overridden = load_settings("settings.STRIPE_API_BASE_URL", APP_ENV="development", STRIPE_API_BASE_URL="http://stripe-mock:12111/")
    assert overridden.stdout.strip() == "http://stripe-mock:12111"


@pytest.mark.parametrize("slug", ["stripe", "paystack", "mpesa", "chapa", "flutterwave", "omise", "paypal"])
def test_the_dev_fakes_serve_each_provider(slug):
    """``make run`` mounts a fake for every provider under its own prefix."""
    from fakes.app import build_fakes

    prefixes = dict(build_fakes().mounts)
    assert f"/{slug}" in prefixes
