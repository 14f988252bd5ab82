"""A provider is one package plus one registry line (docs/adding-a-provider.md). For every
registered provider, its package has its parts: the adapter and the capabilities it declares,
wire builders the simulator can send, a fake of its API, its payloads with their sources, and its
tests. And a provider's code imports nothing above it but core/ (the layer rule)."""

from __future__ import annotations

import ast
import inspect
import json
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.money import CURRENCY_EXPONENTS
from fakes.server import FakeApp
from providers.base import HmacHeaderAdapter, NormalizedEvent, ProviderAdapter
from providers.registry import PROVIDERS, get_provider, provider_package, provider_part, provider_slugs
from providers.wire import Delivery, Params
from tests.providers.helpers import fake_server, payloads_dir

REPO = Path(__file__).resolve().parents[2]
SLUGS = provider_slugs()
# Nothing outside this service to imitate: SurePay only pushes webhooks (it has no API we call),
# and the dummy provider is played by this service itself.
NO_FAKE = {"surepay", "dummy"}
# Their wire format is this project's own (each adapter's docstring): no outside documentation
# to collect payloads from.
OWN_FORMAT = {"surepay", "dummy"}

# Every attribute the rest of the service reads from an adapter, and its type. Each is declared
# (with its default and a comment or docstring) on ProviderAdapter.
CAPABILITIES = {
    "slug": str,
    "display_name": str,
    "verification_method": str,
    "signature_header": str,
    "secret_headers": frozenset,
    "signs_with_api_key": bool,
    "needs_confirmation": bool,
    "verifies_with_api": bool,
    "checkout_enabled": bool,
    "checkout_requires_phone": bool,
    "checkout_requires_email": bool,
    "refund_available": bool,
    "refund_status_available": bool,
    "refund_idempotent": bool,
    "refund_idempotency_window_seconds": int,
    "refund_events_name_the_refund": bool,
    "api_base_url_setting": (str, type(None)),
    "api_timeout_seconds": float,
    "test_key_marker": str,
}


def implements(adapter: ProviderAdapter, method: str) -> bool:
    return getattr(type(adapter), method) is not getattr(ProviderAdapter, method)


def test_every_capability_is_declared_and_documented_on_the_base_class():
    source = inspect.getsource(ProviderAdapter)
    for name in CAPABILITIES:
        assert hasattr(ProviderAdapter, name) or name in ProviderAdapter.__annotations__, name
        declared = inspect.getattr_static(ProviderAdapter, name, None)
        if isinstance(declared, property):
            assert declared.__doc__, f"{name} has no docstring"
        elif name not in ("slug", "display_name"):
            # A comment on the line(s) just above the declaration says what it means.
            line = next(i for i, text in enumerate(source.splitlines()) if text.strip().startswith(f"{name}:"))
            assert source.splitlines()[line - 1].strip().startswith("#"), f"{name} has no comment"


@pytest.mark.parametrize("slug", SLUGS)
def test_the_adapter_lives_in_its_package_and_is_re_exported(slug):
    package = provider_package(slug)
    assert package == f"providers.{slug}"
    adapter = get_provider(slug)
    assert isinstance(adapter, ProviderAdapter) and adapter.slug == slug
    assert type(adapter).__module__ == f"{package}.adapter"
    class_name = PROVIDERS[slug].rpartition(".")[2]
    assert getattr(import_module(package), class_name) is type(adapter)


@pytest.mark.parametrize("slug", SLUGS)
def test_the_adapter_declares_its_capabilities(slug):
    adapter = get_provider(slug)
    for name, kind in CAPABILITIES.items():
        assert isinstance(getattr(adapter, name), kind), f"{slug}.{name} is not a {kind}"
    assert adapter.display_name and adapter.verification_method
    assert all(name == name.lower() for name in adapter.secret_headers)
    # A provider that signs nothing is believed only after its API confirms.
    assert adapter.signature_header or adapter.needs_confirmation
    if adapter.needs_confirmation:
        assert implements(adapter, "fetch_status"), "needs_confirmation without fetch_status"
    if adapter.checkout_requires_phone or adapter.checkout_requires_email:
        assert implements(adapter, "create_checkout")
    if adapter.refund_idempotent:
        assert adapter.refund_available and adapter.refund_idempotency_window_seconds > 0
    if adapter.refund_status_available:
        assert adapter.refund_available
    if isinstance(adapter, HmacHeaderAdapter):
        assert adapter.hmac_encoding in ("hex", "base64")
        assert adapter.hmac_algorithm in ("sha256", "sha512")


@pytest.mark.parametrize("slug", SLUGS)
def test_the_wire_module_builds_what_the_adapter_accepts(slug, settings):
    """Every event type the simulator can send, signed by the package's wire.py, passes the
    adapter's own verification and parsing."""
    wire = provider_part(slug, "wire")
    assert wire is not None, f"providers/{slug}/wire.py is missing"
    assert wire.EVENT_TYPES and all(callable(build) for build in wire.EVENT_TYPES.values())
    assert wire.DEFAULT_CURRENCY is None or wire.DEFAULT_CURRENCY in CURRENCY_EXPONENTS
    assert isinstance(wire.STARTED_CHECKOUTS_ONLY, str)
    adapter = get_provider(slug)
    secret = "sk_test_wire_secret" if adapter.signs_with_api_key else "wire-secret"
    account = SimpleNamespace(webhook_secret=secret, webhook_secrets=lambda: [secret], test_mode=True)
    for kind, build in wire.EVENT_TYPES.items():
        params = Params(amount_minor=150_000, currency=wire.DEFAULT_CURRENCY or "UGX", checkout_id="ws_CO_wire_1",
                        reference="SIM-wire", test_mode=True)  # fmt: skip
        delivery = wire.signed_delivery(build(params), secret=secret, payment_id="payment-1")
        assert isinstance(delivery, Delivery)
        if adapter.verifies_with_api:  # the provider's API is asked: its fake, with its demo keys
            fake = provider_part(slug, "fake").FAKE()
            with fake_server(fake, settings, adapter.api_base_url_setting):
                api_account = SimpleNamespace(**{**vars(account), "pk": 1, "test_mode": False, "api_key": fake.client_secret,
                                                 "credentials": {"client_id": fake.client_id}})  # fmt: skip
                adapter.verify_signature(body=delivery.body, headers=delivery.headers, account=api_account, query={})
        elif not wire.STARTED_CHECKOUTS_ONLY:  # else the callback is only good for a payment in the database
            adapter.verify_signature(body=delivery.body, headers=delivery.headers, account=account, query=delivery.query)
        event = adapter.parse_body(body=delivery.body, headers=delivery.headers, account=account)
        assert isinstance(event, NormalizedEvent), kind


@pytest.mark.parametrize("slug", SLUGS)
def test_the_fake_is_mounted_by_the_development_server(slug):
    fake = provider_part(slug, "fake")
    if slug in NO_FAKE:
        assert fake is None
        return
    assert fake is not None, f"providers/{slug}/fake.py is missing"
    assert issubclass(fake.FAKE, FakeApp)
    from fakes.app import build_fakes

    assert isinstance(dict(build_fakes().mounts)[f"/{slug}"], fake.FAKE)


@pytest.mark.parametrize("slug", SLUGS)
def test_the_payloads_are_there_with_their_sources(slug):
    payloads = payloads_dir(slug)
    recorded = sorted(payloads.glob("*.json"))
    assert recorded, f"providers/{slug}/payloads/ has no recorded payload"
    readme = (payloads / "README.md").read_text()
    for path in recorded:
        assert f"`{path.name}`" in readme, f"payloads/README.md does not say where {path.name} comes from"
        assert isinstance(json.loads(path.read_text()), dict)
    documented = payloads / "documented"
    if slug in OWN_FORMAT:
        assert not documented.exists()
        return
    files = sorted(documented.glob("*.json"))
    assert files, f"providers/{slug}/payloads/documented/ has no payload from the provider's documentation"
    sources = (documented / "SOURCES.md").read_text()
    for path in files:
        assert path.stem in sources, f"documented/SOURCES.md does not say where {path.name} comes from"
        json.loads(path.read_text())


@pytest.mark.parametrize("slug", SLUGS)
def test_the_package_has_its_tests(slug):
    tests = payloads_dir(slug).parent / "tests"
    assert (tests / "__init__.py").exists()
    assert list(tests.glob("test_*.py")), f"providers/{slug}/tests/ has no test module"


# --- The layer rule --------------------------------------------------------------------------------

FIRST_PARTY = {"config", "core", "payments", "providers", "webhooks", "directory_client", "quickbooks_sync", "ops",
               "fakes", "tests", "bench", "tools"}  # fmt: skip


def imported_apps(path: Path) -> set[str]:
    """The first-party top-level packages ``path`` imports, anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & FIRST_PARTY


def test_providers_import_nothing_above_them():
    """Adapters, wire modules and the shared provider code import only core/ and providers/: a
    provider knows nothing of payments, webhooks or the books (they are handed an account and a
    payment). A fake may use the fakes' HTTP plumbing; tests may use anything."""
    problems = []
    for path in sorted((REPO / "providers").rglob("*.py")):
        relative = path.relative_to(REPO)
        if "tests" in relative.parts:
            continue
        allowed = {"core", "providers"} | ({"fakes"} if path.name == "fake.py" else set())
        if extra := imported_apps(path) - allowed:
            problems.append(f"{relative} imports {sorted(extra)}")
    assert problems == []
