"""Events whose body cannot be trusted alone move money only after the provider's API confirms
them (the mechanism every unsigned provider uses; the providers' own tests run it against their
fake servers)."""

import json

import pytest

from core.status import PaymentStatus
from payments.models import AuditLog, Payment, WebhookEvent
from providers import registry
from providers.base import NormalizedEvent, NormalizedStatus, ProviderAdapter
from providers.errors import ProviderUnavailable
from tests.factories import AccountFactory
from webhooks.services import webhook_event_run

pytestmark = pytest.mark.django_db


class UnsignedProvider(ProviderAdapter):
    """Like M-Pesa: nothing binds the body to a secret, only an id we know."""

    slug = "unsigned"
    display_name = "Unsigned test provider"
    answers: list = []

    def verify_signature(self, *, body, headers, account, query):
        pass

    def parse(self, *, payload, headers, account):
        return NormalizedEvent(
            event_id=payload["id"],
            event_type="callback",
            status=PaymentStatus(payload["status"]),
            external_txn_id=payload["txn"],
            amount_minor=payload["amount"],
            currency="KES",
            requires_confirmation=True,
        )

    def fetch_status(self, *, payment):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def unsigned(monkeypatch, school):
    monkeypatch.setitem(registry.PROVIDERS, "unsigned", f"{__name__}.UnsignedProvider")
    registry._load.cache_clear()
    UnsignedProvider.answers = []
    yield AccountFactory(school=school, provider="unsigned")
    registry._load.cache_clear()


def deliver(client, **payload):
    body = json.dumps({"id": "cb-1", "txn": "t-1", "amount": 150_000, "status": "succeeded", **payload})
    response = client.post("/api/webhooks/unsigned/ng", data=body, content_type="application/json")
    assert response.status_code == 202
    return WebhookEvent.objects.get(external_event_id=payload.get("id", "cb-1"))


def test_an_unconfirmed_success_is_processing_until_the_api_confirms_it(client, unsigned, fake_directory):
    UnsignedProvider.answers = [NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=150_000, currency="KES")]
    event = deliver(client)
    result = webhook_event_run(event_id=event.pk)
    assert result.startswith("new -> processing; confirmed: processing -> succeeded")
    payment = Payment.objects.get()
    assert payment.status == PaymentStatus.SUCCEEDED
    actions = list(AuditLog.objects.filter(target_id=str(payment.pk)).order_by("id").values_list("action", "details__to"))
    assert actions[:2] == [("payment.webhook", "processing"), ("payment.confirmed", "succeeded")]


def test_a_forged_success_is_not_believed(client, unsigned, fake_directory):
    UnsignedProvider.answers = [NormalizedStatus(status=PaymentStatus.FAILED)]
    webhook_event_run(event_id=deliver(client).pk)
    assert Payment.objects.get().status == PaymentStatus.FAILED


def test_the_confirmed_amount_wins_over_the_claimed_one(client, unsigned, fake_directory):
    UnsignedProvider.answers = [NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=100, currency="KES")]
    webhook_event_run(event_id=deliver(client, amount=999_999).pk)
    assert Payment.objects.get().amount_minor == 100


def test_a_provider_outage_retries_the_confirmation_later(client, unsigned, fake_directory):
    UnsignedProvider.answers = [
        ProviderUnavailable("Unsigned test provider timed out"),
        NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=150_000, currency="KES"),
    ]
    event = deliver(client)
    assert webhook_event_run(event_id=event.pk) == "retrying"
    event.refresh_from_db()
    assert (event.status, event.last_error) == ("pending", "Unsigned test provider timed out")
    assert event.next_attempt_at is not None
    assert Payment.objects.get().status == PaymentStatus.PROCESSING

    assert "confirmed: processing -> succeeded" in webhook_event_run(event_id=event.pk)
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED
    # The event was applied once; only the confirmation ran again.
    assert AuditLog.objects.filter(action="payment.webhook").count() == 1
