"""Property-based: correctly signed, structure-aware mutations of every recorded payload of every
provider (providers/<provider>/payloads/**/*.json, picked up by themselves) are posted to the
real endpoint. Whatever the body:

- the answer is never a 5xx (the test client raises on a server error);
- every 400 is kept as a dead letter (one per distinct body);
- every 202 is processable: the worker applies it to its payment without an error of ours (only
  the provider's own API, unreachable here, may hold back a confirmation).

Unsigned garbage (any body, signature, school code or query) is refused with 401 and stores nothing.
The budget is the hypothesis profile (tests/fuzzing.py): a few dozen examples per provider in
``make test``, thousands with ``make fuzz``.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.models import WebhookEvent
from providers.chapa.wire import chapa_delivery
from providers.dummy.wire import dummy_delivery
from providers.flutterwave.wire import flutterwave_delivery
from providers.mpesa.adapter import callback_token
from providers.mpesa.wire import mpesa_delivery
from providers.omise.wire import omise_delivery
from providers.paypal.fake import FakePayPal
from providers.paypal.wire import paypal_delivery
from providers.paystack.wire import paystack_delivery
from providers.registry import get_provider, provider_slugs
from providers.stripe.wire import stripe_delivery
from providers.surepay.wire import surepay_delivery
from providers.wire import Delivery
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory
from tests.fuzzing import count, hostile_text, mutated_json
from tests.providers.helpers import fake_server, payloads_dir

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

SECRET = "whsec_fuzz_secret_1"


# How each provider signs a delivery (its package's wire.py, written from the provider's documentation).
SIGNERS = {
    "surepay": lambda body, account: surepay_delivery(body, SECRET),
    "dummy": lambda body, account: dummy_delivery(body, SECRET),
    "stripe": lambda body, account: stripe_delivery(body, [SECRET]),
    "paystack": lambda body, account: paystack_delivery(body, SECRET),
    "chapa": lambda body, account: chapa_delivery(body, SECRET),
    "flutterwave": lambda body, account: flutterwave_delivery(body, SECRET),
    "omise": lambda body, account: omise_delivery(body, [SECRET]),
    "mpesa": lambda body, account: mpesa_delivery(body, mpesa_token(body, account)),
    "paypal": lambda body, account: paypal_delivery(body, SECRET),
}
PROVIDERS = [slug for slug in provider_slugs() if payloads_dir(slug).is_dir()]


def payloads(provider: str) -> list[dict]:
    return [json.loads(path.read_text(), parse_float=Decimal) for path in sorted(payloads_dir(provider).rglob("*.json"))]


def test_every_provider_with_payloads_can_be_signed():
    assert set(PROVIDERS) <= set(SIGNERS), "add a signer for the new provider's payloads"
    assert all(payloads(provider) for provider in PROVIDERS)


@pytest.fixture
def quiet_world(settings, school, fake_directory):
    settings.RATELIMIT_ENABLE = False  # the refusals of this test are not an attack
    for name in ("STRIPE", "PAYSTACK", "MPESA", "MPESA_SANDBOX", "CHAPA", "FLUTTERWAVE", "OMISE"):
        # Confirmations go nowhere at once (connection refused): the provider's API is not under test.
        setattr(settings, f"{name}_API_BASE_URL", "http://127.0.0.1:9")
    # PayPal is asked whether each delivery is genuine: its fake answers (it knows nothing else).
    with fake_server(FakePayPal(), settings, "PAYPAL_SANDBOX_API_BASE_URL"):
        yield school


def provider_account(provider: str, school):
    adapter = get_provider(provider)
    account = AccountFactory(
        school=school, provider=provider, webhook_secret=SECRET, test_mode=True,
        api_key=SECRET if adapter.signs_with_api_key else "",
    )  # fmt: skip
    if provider == "paypal":
        fake = FakePayPal()
        account.credentials, account.api_key = {"client_id": fake.client_id}, fake.client_secret
        account.save()
    if provider == "mpesa":
        # A callback is only authenticated for an STK push this service started: the recorded
        # ones and a few more, each with its own token in the callback URL.
        checkout_ids = {
            p["Body"]["stkCallback"]["CheckoutRequestID"] for p in payloads("mpesa") if "stkCallback" in p.get("Body", {})
        }
        checkout_ids |= {f"ws_CO_fuzz_{n}" for n in range(30)}
        account.mpesa_tokens = {}
        for checkout_id in sorted(checkout_ids):
            payment = PaymentFactory(account=account, external_txn_id=None, provider_checkout_id=checkout_id,
                                     currency="KES", amount_minor=150_000)
            account.mpesa_tokens[checkout_id] = callback_token(SECRET, payment.pk)
    return account


def mpesa_token(body: bytes, account) -> str:
    """The token of the push the callback names (the first one's when it names none we know)."""
    named = re.search(rb'"CheckoutRequestID": "([^"]*)"', body)
    known = account.mpesa_tokens
    return known.get(named.group(1).decode("utf-8", "replace") if named else "", next(iter(known.values())))


# Id fields that must keep values this service knows for the delivery to authenticate.
FRESH_IDS = {"mpesa": {"CheckoutRequestID": st.sampled_from([f"ws_CO_fuzz_{n}" for n in range(30)])}}


def post(client, provider: str, delivery: Delivery):
    url = f"/api/webhooks/{provider}/ng" + (f"?{urlencode(delivery.query)}" if delivery.query else "")
    return client.post(url, data=delivery.body, content_type="application/json", headers=delivery.headers)


@pytest.fixture
def provider_answers(monkeypatch):
    """What the providers' APIs said when asked to confirm (here: unreachable, or a refusal to look
    up a payment they cannot know). Those are the only failures a processed 202 may end with."""
    said: set[str] = set()
    for provider in PROVIDERS:
        adapter_class = type(get_provider(provider))
        original = adapter_class.fetch_status

        def fetch_status(self, *, payment, _original=original):
            try:
                return _original(self, payment=payment)
            except Exception as exc:
                said.add(str(exc))
                raise

        monkeypatch.setattr(adapter_class, "fetch_status", fetch_status)
    return said


def assert_processable(event: WebhookEvent, provider_answers: set[str], surface: str) -> None:
    """The worker applied it to its payment; if it is not done, only the provider's confirmation
    held it back, never an error of ours. A true conflict (its identifiers name two payments) is
    failed at once for staff, without retries."""
    event.refresh_from_db()
    if event.status == WebhookEvent.Status.FAILED and event.last_error.startswith("Conflict: "):
        assert event.attempts == 1
        count(surface, "202, conflict for staff")
        return
    assert event.applied_at is not None, (event.status, event.last_error)
    if event.status != WebhookEvent.Status.PROCESSED:
        assert event.last_error in provider_answers, event.last_error
        count(surface, "202, confirmation refused by the provider's API")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_signed_mutations_of_recorded_payloads(client, quiet_world, provider_answers, provider):
    account = provider_account(provider, quiet_world)
    seeds = payloads(provider)

    @given(st.data())
    def check(examples):
        seed = examples.draw(st.sampled_from(seeds), label="seed")
        body = examples.draw(mutated_json(seed, FRESH_IDS.get(provider)), label="body")
        response = post(client, provider, SIGNERS[provider](body, account))
        count(f"webhook {provider}", response.status_code)
        assert response.status_code in (200, 202, 400, 401, 413), response.content
        if response.status_code == 400:
            assert WebhookEvent.objects.filter(
                account=account, status=WebhookEvent.Status.REJECTED, body_sha256=hashlib.sha256(body).hexdigest()
            ).exists()
        elif response.status_code == 202:
            event = WebhookEvent.objects.get(account=account, external_event_id=response.json()["event_id"])
            process_pending()
            assert_processable(event, provider_answers, f"webhook {provider}")

    check()


@pytest.fixture
def some_accounts(quiet_world):
    return [provider_account(p, quiet_world) for p in ("surepay", "stripe", "paystack", "mpesa")]


@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    signature=st.one_of(st.none(), hostile_text),
    school_code=st.one_of(st.none(), st.just("ng"), hostile_text),
    query=st.dictionaries(st.sampled_from(["t", "x", "school"]), hostile_text, max_size=2),
    provider=st.sampled_from(["surepay", "stripe", "paystack", "mpesa", "chapa", "flutterwave", "omise", "SUREPAY", "nope"]),
)
def test_unsigned_garbage_is_refused_and_stores_nothing(client, some_accounts, body, signature, school_code, query, provider):
    headers = {}
    if signature is not None:
        for name in ("X-Signature", "Stripe-Signature", "x-paystack-signature", "verif-hash", "x-chapa-signature"):
            headers[name] = signature.encode("utf-8", "surrogatepass").decode("latin-1")
    if school_code is not None:
        headers["X-School-Code"] = school_code.encode("utf-8", "surrogatepass").decode("latin-1")
    url = f"/api/webhooks/{provider}" + (f"?{urlencode(query, encoding='utf-8', errors='surrogatepass')}" if query else "")
    response = client.post(url, data=body, content_type="application/json", headers=headers)
    count("webhook unsigned", response.status_code)
    assert response.status_code in (400, 401, 403, 404), response.content
    assert not WebhookEvent.objects.exists()
