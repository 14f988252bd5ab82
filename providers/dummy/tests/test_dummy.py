import hashlib
import hmac
import json

import pytest

from core.status import PaymentStatus
from payments.models import Payment
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


# --- Its checkout: the simulate page records the "provider's" state, fetch_status reads it --------


def test_dummy_checkout_points_at_the_simulate_page(settings, dummy_account):
    from payments.models import Payment
    from providers.base import ReturnUrls

    settings.PUBLIC_BASE_URL = "https://pay.example.org"
    payment = Payment.objects.create(
        school=dummy_account.school, account=dummy_account, provider="dummy", amount_minor=1000, currency="UGX", reference="PX"
    )
    result = get_provider("dummy").create_checkout(
        payment=payment, return_urls=ReturnUrls("https://pay.example.org/thanks", "https://pay.example.org/pay")
    )
    assert result.redirect_url == f"https://pay.example.org/payments/simulate/{payment.pk}"
    assert result.checkout_id == f"dchk_{payment.pk.hex}"
    assert not result.prompt_sent
    payment.refresh_from_db()
    assert payment.provider_checkout_id is None  # adapters never write to the database


def test_dummy_fetch_status_reads_what_the_payer_did(dummy_account):
    from payments.models import Payment
    from payments.services import dummy_payment_simulate
    from providers.errors import ProviderRejected

    payment = Payment.objects.create(
        school=dummy_account.school, account=dummy_account, provider="dummy", amount_minor=1000, currency="UGX", reference="PY"
    )
    adapter = get_provider("dummy")
    with pytest.raises(ProviderRejected):
        adapter.fetch_status(payment=payment)  # no checkout was started
    payment.provider_checkout_id = "dchk_1"
    payment.save()
    assert adapter.fetch_status(payment=payment).status == PaymentStatus.PENDING
    payment = dummy_payment_simulate(payment_id=payment.pk, outcome="succeeded", amount_minor=900)
    status = adapter.fetch_status(payment=payment)
    assert (status.status, status.amount_minor, status.currency) == (PaymentStatus.SUCCEEDED, 900, "UGX")
    assert status.external_txn_id.startswith("dtxn_")
    # The first answer is final, as at a real provider.
    payment = dummy_payment_simulate(payment_id=payment.pk, outcome="failed")
    assert adapter.fetch_status(payment=payment).status == PaymentStatus.SUCCEEDED


def test_the_simulated_webhook_is_signed_and_accepted(client, dummy_account):
    from payments.models import Payment
    from payments.services import dummy_payment_simulate

    payment = Payment.objects.create(
        school=dummy_account.school, account=dummy_account, provider="dummy", amount_minor=1000, currency="UGX", reference="PZ"
    )
    payment = dummy_payment_simulate(payment_id=payment.pk, outcome="succeeded")
    body, headers = get_provider("dummy").simulated_webhook(payment=payment, account=dummy_account)
    assert headers["X-Dummy-Signature"] == signature(body)
    assert post(client, body, headers["X-Dummy-Signature"]).status_code == 202
    process_pending()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
