import hashlib
import hmac
import json

import pytest

from payments.models import Payment, WebhookEvent
from payments.state import PaymentStatus
from providers.errors import UnknownProvider
from providers.registry import get_provider, provider_slugs
from tests.conftest import process_pending
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dummy_account(school):
    return AccountFactory(school=school, provider="dummy", webhook_secret="dummy-secret")


def dummy_body(event_type="payment.succeeded", event_id="devt_1", **data):
    payload = {
        "id": event_id,
        "type": event_type,
        "data": {"txn_id": "dtxn_1", "reference": "", "amount_minor": 150_000, "currency": "UGX", "student_id": "STU-0001", **data},
    }
    return json.dumps(payload).encode()


def post(client, body, signature):
    return client.post(
        "/api/webhooks/dummy/ng", data=body, content_type="application/json", HTTP_X_DUMMY_SIGNATURE=signature
    )


def signature(body, secret="dummy-secret"):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_registry_knows_both_foundation_providers():
    assert {"dummy", "surepay"} <= set(provider_slugs())
    assert get_provider("DUMMY").slug == "dummy"
    with pytest.raises(UnknownProvider):
        get_provider("nope")


def test_signed_dummy_event_is_accepted_in_minor_units(client, dummy_account):
    body = dummy_body()
    response = post(client, body, signature(body))
    assert response.status_code == 202
    process_pending()
    payment = Payment.objects.get()
    assert (payment.provider, payment.amount_minor, payment.currency, payment.status) == ("dummy", 150_000, "UGX", "succeeded")
    assert post(client, body, signature(body)).status_code == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {"detail": "Missing X-Dummy-Signature header", "code": "signature_missing"}),
        ("md5=abc", {"detail": "X-Dummy-Signature does not match the body", "code": "signature_invalid"}),
    ],
)
def test_bad_dummy_signatures(client, dummy_account, header, expected):
    response = post(client, dummy_body(), header)
    assert (response.status_code, response.json()) == (401, expected)


def test_wrong_secret(client, dummy_account):
    body = dummy_body()
    assert post(client, body, signature(body, "other")).status_code == 401


def test_a_float_amount_is_a_field_error(client, dummy_account):
    body = dummy_body(amount_minor=1500.5)
    response = post(client, body, signature(body))
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "data.amount_minor", "message": "Input should be a valid integer"}]


def test_a_dummy_refund(client, dummy_account):
    body = dummy_body()
    post(client, body, signature(body))
    refund = dummy_body("payment.refunded", "devt_2", refunded_minor=50_000)
    assert post(client, refund, signature(refund)).status_code == 202
    process_pending()
    payment = Payment.objects.get()
    assert (payment.status, payment.refunded_amount_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 50_000)
