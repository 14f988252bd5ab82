"""M-Pesa Daraja: an unsigned callback accepted only for an STK push we started (with its URL
token), always confirmed by STK Push Query; OAuth, STK push and query against the fake."""

import base64
from urllib.parse import urlsplit

import pytest

from core.money import MoneyError
from core.status import PaymentStatus as S
from payments.models import WebhookEvent
from providers.base import ReturnUrls
from providers.errors import OperationNotSupported, ProviderRejected
from providers.mpesa.adapter import callback_token, minor_to_whole_shillings, normalize_msisdn, whole_shillings_to_minor
from providers.mpesa.fake import FakeDaraja
from providers.mpesa.wire import mpesa_delivery
from providers.registry import get_provider
from providers.wire import dumps
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentFactory
from tests.providers.helpers import accepted, answer, dead_letter, duplicate, fake_server, load, post, raw, refused

pytestmark = pytest.mark.django_db

SECRET = "mpesa-callback-secret-1"
CREDENTIALS = {"consumer_key": "ck_school", "consumer_secret": "cs_school", "shortcode": "174379", "passkey": "pk_school"}
CHECKOUT_ID = "ws_CO_191220191020363925"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok",
                  "https://pay.example.org/api/webhooks/mpesa/ng")


@pytest.fixture
def account(school):
    return AccountFactory(school=school, provider="mpesa", webhook_secret=SECRET, credentials=CREDENTIALS, test_mode=True)


@pytest.fixture
def fake(settings):
    daraja = FakeDaraja(consumer_key="ck_school", consumer_secret="cs_school", passkey="pk_school")
    with fake_server(daraja, settings, "MPESA_SANDBOX_API_BASE_URL") as fake:
        settings.MPESA_API_BASE_URL = "http://127.0.0.1:9"  # live host: must not be used in test mode
        yield fake


@pytest.fixture
def started(account):
    return PaymentFactory(account=account, external_txn_id=None, reference="INV-2025-0042", provider_checkout_id=CHECKOUT_ID,
                          amount_minor=150_000, currency="KES", payer={"phone": "0708374149"})


def callback(payment, name="stk_callback_success", token=None):
    return mpesa_delivery(raw("mpesa", name), token or callback_token(SECRET, payment.pk))


def test_recorded_callback_is_accepted_and_normalized_as_unconfirmed(client, account, started):
    delivery = callback(started)
    assert answer(post(client, "mpesa", delivery)) == accepted(CHECKOUT_ID)
    event = get_provider("mpesa").verify_and_parse(body=delivery.body, headers={}, account=account, query=delivery.query)
    assert event.as_json() == {
        "event_id": CHECKOUT_ID, "event_type": "stk.callback.0", "status": "succeeded", "external_txn_id": "NLJ7RT61SV",
        "amount_minor": 150_000, "currency": "KES", "reference": "", "checkout_id": CHECKOUT_ID,
        "provider_student_id": "", "payer": {"phone": "254708374149"}, "refunded_total_minor": None,
        "refunds": (), "disputes": (), "occurred_at": None, "charge_id": "", "ignored_reason": "", "requires_confirmation": True,
    }


def test_a_callback_for_a_push_we_did_not_start_is_refused(client, account, started):
    payload = load("mpesa", "stk_callback_success")
    payload["Body"]["stkCallback"]["CheckoutRequestID"] = "ws_CO_forged"
    delivery = mpesa_delivery(dumps(payload), callback_token(SECRET, started.pk))
    assert answer(post(client, "mpesa", delivery)) == refused("signature_invalid", "Unknown CheckoutRequestID or wrong callback token")
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", refused("signature_missing", "Missing callback token (the t query parameter)")),
        ("0" * 64, refused("signature_invalid", "Unknown CheckoutRequestID or wrong callback token")),
        (None, refused("signature_invalid", "Unknown CheckoutRequestID or wrong callback token")),  # another secret's token
    ],
)
def test_a_missing_or_wrong_token_is_refused(client, account, started, token, expected):
    token = callback_token("some-other-secret", started.pk) if token is None else token
    delivery = mpesa_delivery(raw("mpesa", "stk_callback_success"), token)
    delivery = delivery if token else delivery.__class__(delivery.body, {}, {})
    assert answer(post(client, "mpesa", delivery)) == expected


def test_a_body_naming_no_checkout_is_refused_not_stored(client, account, started):
    delivery = mpesa_delivery(b'{"Body": {}}', callback_token(SECRET, started.pk))
    assert answer(post(client, "mpesa", delivery)) == refused("signature_invalid", "Callback does not name a CheckoutRequestID")
    assert not WebhookEvent.objects.exists()


def test_the_same_callback_again_is_a_duplicate(client, account, started):
    post(client, "mpesa", callback(started))
    assert answer(post(client, "mpesa", callback(started))) == duplicate(CHECKOUT_ID)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda cb: cb.pop("ResultCode"), "Body.stkCallback.ResultCode"),
        (lambda cb: cb["CallbackMetadata"]["Item"].pop(1), "Body.stkCallback.CallbackMetadata.Item.MpesaReceiptNumber"),
        (lambda cb: cb["CallbackMetadata"]["Item"][0].update(Value="1500.50"), "Body.stkCallback.CallbackMetadata.Item.Amount"),
    ],
)
def test_a_missing_or_wrong_field_is_a_dead_letter(client, account, started, mutate, field):
    payload = load("mpesa", "stk_callback_success")
    mutate(payload["Body"]["stkCallback"])
    delivery = mpesa_delivery(dumps(payload), callback_token(SECRET, started.pk))
    response = post(client, "mpesa", delivery)
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert dead_letter().errors == response.json()["errors"]


@pytest.mark.parametrize(("value", "minor"), [(1500, 150_000), ("1500", 150_000), (1, 100), (250_000, 25_000_000)])
def test_whole_shillings_to_minor_units(value, minor):
    assert whole_shillings_to_minor(value) == minor


def test_cents_are_refused_both_ways():
    from decimal import Decimal

    assert whole_shillings_to_minor(Decimal("1500.00")) == 150_000
    for bad in (Decimal("1500.50"), "15.5", -3):
        with pytest.raises(MoneyError):
            whole_shillings_to_minor(bad)
    with pytest.raises(MoneyError, match="whole shillings"):
        minor_to_whole_shillings(150_050)


@pytest.mark.parametrize("phone", ["0712345678", "+254712345678", "254 712 345 678", "712345678", "0112345678"])
def test_phone_numbers_are_normalized(phone):
    assert normalize_msisdn(phone) in ("254712345678", "254112345678")


def test_a_foreign_number_is_refused():
    with pytest.raises(ProviderRejected):
        normalize_msisdn("+256712345678")


# --- The whole loop: STK push, the callback Daraja sends, the query that confirms ---------------


def start_push(account, fake, reference="INV-2025-0042"):
    payment = PaymentFactory(account=account, external_txn_id=None, reference=reference, amount_minor=150_000,
                             currency="KES", payer={"phone": "0708374149"})
    result = get_provider("mpesa").create_checkout(payment=payment, return_urls=URLS)
    payment.provider_checkout_id = result.checkout_id  # what the checkout service stores
    payment.save()
    return payment, result


def daraja_callback(client, fake, payment, result_code=0):
    """Post the callback the way Daraja would: to the CallBackURL it was given."""
    push = fake.pushes[payment.provider_checkout_id]
    url = urlsplit(push["callback_url"])
    payload = load("mpesa", "stk_callback_success" if result_code == 0 else "stk_callback_cancelled")
    payload["Body"]["stkCallback"]["CheckoutRequestID"] = payment.provider_checkout_id
    return client.post(f"{url.path}?{url.query}", data=dumps(payload), content_type="application/json")


def test_stk_push_sends_the_documented_requests(account, fake):
    payment, result = start_push(account, fake)
    oauth, push = fake.requests
    basic = base64.b64encode(b"ck_school:cs_school").decode()
    assert (oauth.method, oauth.path, oauth.query, oauth.headers["Authorization"]) == (
        "GET", "/oauth/v1/generate", {"grant_type": ["client_credentials"]}, f"Basic {basic}")
    body = push.json()
    timestamp = body.pop("Timestamp")
    assert len(timestamp) == 14 and timestamp.isdigit()
    assert body.pop("Password") == base64.b64encode(f"174379pk_school{timestamp}".encode()).decode()
    callback_url = body.pop("CallBackURL")
    assert callback_url == f"{URLS.callback_url}?t={callback_token(SECRET, payment.pk)}"
    assert body == {"BusinessShortCode": "174379", "TransactionType": "CustomerPayBillOnline", "Amount": 1500,
                    "PartyA": "254708374149", "PartyB": "174379", "PhoneNumber": "254708374149",
                    "AccountReference": "INV20250042", "TransactionDesc": "School fees"}
    assert (push.path, push.headers["Authorization"].startswith("Bearer ")) == ("/mpesa/stkpush/v1/processrequest", True)
    assert (result.prompt_sent, result.checkout_id, result.message) == (True, payment.provider_checkout_id,
                                                                        "Success. Request accepted for processing")
    # The OAuth token is reused until it expires.
    start_push(account, fake, reference="INV-2025-0043")
    assert [r.path for r in fake.requests].count("/oauth/v1/generate") == 1


def test_a_confirmed_callback_settles_the_payment(client, account, fake, fake_directory):
    payment, _ = start_push(account, fake)
    fake.settle(payment.provider_checkout_id, result_code=0)
    assert daraja_callback(client, fake, payment).status_code == 202
    assert process_pending() == ["pending -> processing; confirmed: processing -> succeeded; student pending"]
    query = fake.requests[-1]
    assert query.path == "/mpesa/stkpushquery/v1/query" and query.json()["CheckoutRequestID"] == payment.provider_checkout_id
    payment.refresh_from_db()
    assert (payment.status, payment.amount_minor, payment.external_txn_id) == (S.SUCCEEDED, 150_000, "NLJ7RT61SV")


def test_a_forged_success_is_not_believed(client, account, fake, fake_directory):
    payment, _ = start_push(account, fake)
    # Daraja says the payer cancelled; the callback claims a success.
    fake.settle(payment.provider_checkout_id, result_code=1032)
    daraja_callback(client, fake, payment)
    process_pending()
    payment.refresh_from_db()
    assert payment.status == S.CANCELLED


def test_an_unfinished_query_retries_and_moves_nothing(client, account, fake, fake_directory):
    payment, _ = start_push(account, fake)
    daraja_callback(client, fake, payment)
    assert process_pending() == ["retrying"]
    payment.refresh_from_db()
    assert payment.status == S.PROCESSING
    assert WebhookEvent.objects.get().last_error == "M-Pesa (Daraja) answered HTTP 500"


def test_live_accounts_use_the_live_host_and_refunds_are_not_supported(account, fake, settings):
    account.test_mode = False
    account.save()
    assert get_provider("mpesa").api_base_url(account) == settings.MPESA_API_BASE_URL
    payment = PaymentFactory(account=account, amount_minor=100, currency="KES")
    with pytest.raises(OperationNotSupported):
        get_provider("mpesa").refund(payment=payment, amount_minor=100, idempotency_key="refund-1")


def test_incomplete_credentials_and_cents_are_refused_before_any_call(account, fake):
    payment = PaymentFactory(account=account, amount_minor=150_050, currency="KES", payer={"phone": "0708374149"})
    with pytest.raises(ProviderRejected, match="whole shillings"):
        get_provider("mpesa").create_checkout(payment=payment, return_urls=URLS)
    account.credentials = {"consumer_key": "x"}
    payment.amount_minor = 150_000
    with pytest.raises(ProviderRejected, match="credentials are incomplete"):
        get_provider("mpesa").create_checkout(payment=payment, return_urls=URLS)
    assert not fake.requests
