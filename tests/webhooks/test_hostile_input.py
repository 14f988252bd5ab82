"""Hostile webhook bodies: each is refused cheaply, with the status of the ingestion contract, and
a signed one is kept as a dead letter (the decoder's limits, the money parsers' size checks, the
NormalizedEvent check, M-Pesa's token before its body)."""

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from decimal import Decimal
from unittest import mock

import pytest

from core.money import MoneyError, parse_major_amount
from core.status import PaymentStatus
from payments.models import AuditLog, Payment, TransactionFact, WebhookEvent
from providers.base import STORED_TEXT_FIELDS, NormalizedEvent, normalized_event_check, stored_text_limits
from providers.common import integer_units
from providers.errors import PayloadInvalid
from providers.mpesa.adapter import callback_token
from providers.mpesa.wire import mpesa_delivery
from providers.paystack.wire import paystack_delivery
from providers.wire import Delivery
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.factories import AccountFactory, PaymentFactory
from tests.providers.helpers import post, raw

pytestmark = pytest.mark.django_db


def dead_letter_for(body: bytes) -> WebhookEvent:
    return WebhookEvent.objects.get(status=WebhookEvent.Status.REJECTED, body_sha256=hashlib.sha256(body).hexdigest())


def signed_surepay(client, body: bytes):
    started = time.process_time()
    response = post_webhook(client, body, signature=sign(body))
    return response, time.process_time() - started


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a":' * 4_000 + b"1" + b"}" * 4_000, "nesting deeper than 32 levels"),
        (b"[" * 4_000, "nesting deeper than 32 levels"),
        (b"[" * 200_000, "more than 5000 values"),
        (surepay_body()[:-1] + b', "x": ' + b"[" * 33 + b"]" * 33 + b"}", "nesting deeper than 32 levels"),
        (b'{"amount": 1e1000000}', "a number's exponent is beyond ±40"),
        (b'{"amount": 0e-999999999}', "a number's exponent is beyond ±40"),
        (b'{"amount": ' + b"9" * 100_000 + b"}", "a number has more than 40 characters"),
        (b'{"amount": NaN}', "NaN is not a number"),
        (b'{"amount": -Infinity}', "-Infinity is not a number"),
        (b'{"event_id": "\\u0000"}', "a string contains a NUL character or a lone UTF-16 surrogate"),
        (b'{"event_id": "\\ud800"}', "a string contains a NUL character or a lone UTF-16 surrogate"),
        (b'{"event_id": "a\x00b"}', "the body contains a NUL character"),
        (b'{"event_id": "\xff\xfe"}', "the body is not valid UTF-8 (byte 14)"),
        (b"[" + b"0," * 5_001 + b"0]", "more than 5000 values"),
        (b"[" + b"[]" * 5_000 + b"]", "more than 5000 values"),
    ],
    ids=["deep-objects", "deep-arrays", "200k-brackets", "33-deep-inside", "huge-exponent", "tiny-exponent", "long-number",
         "nan", "infinity", "nul-escape", "lone-surrogate", "raw-nul", "not-utf8", "too-many-values",
         "too-many-containers"],
)
def test_a_body_beyond_the_decoders_limits_is_a_400_dead_letter_at_once(client, account, body, message):
    response, cpu_seconds = signed_surepay(client, body)
    assert response.status_code == 400
    assert response.json() == {"detail": f"Malformed JSON body: {message}", "code": "malformed_json"}
    letter = dead_letter_for(body)
    assert letter.errors == [{"field": "(body)", "message": f"Malformed JSON body: {message}"}]
    assert "\x00" not in letter.raw_body
    assert cpu_seconds < 0.5  # generous for a shared CI machine; the benchmark has the real figures


def test_the_same_hostile_body_again_is_one_dead_letter(client, account):
    body = b'{"amount": 1e1000000}'
    signed_surepay(client, body)
    signed_surepay(client, body)
    assert dead_letter_for(body).attempts == 2
    assert WebhookEvent.objects.count() == 1


def test_escaped_backslash_before_u0000_is_text_not_a_nul(client, account):
    body = surepay_body(external_txn_id="C:\\u0000dir")
    assert b"\\\\u0000" in body
    response, _ = signed_surepay(client, body)
    assert response.status_code == 202
    process_pending()
    assert Payment.objects.get().external_txn_id == "C:\\u0000dir"


def test_a_surrogate_pair_is_a_character_not_a_lone_surrogate(client, account):
    body = surepay_body(provider_student_id="prov-\U0001f600")  # json.dumps writes \ud83d\ude00
    assert b"\\ud83d\\ude00" in body
    assert signed_surepay(client, body)[0].status_code == 202


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("1e999999999", "amount '1e999999999' is not a plain positive number"),
        ("9" * 200_000, "amount '99999999999999999999999999999999'... is longer than 32 characters"),
        ("1" + "0" * 16, "amount '10000000000000000' is implausibly large"),
        ("١٢٣", "amount '١٢٣' is not a plain positive number"),
    ],
    ids=["exponent-text", "a-million-digits", "implausible", "arabic-digits"],
)
def test_an_amount_string_is_checked_for_size_before_conversion(client, account, amount, message):
    body = surepay_body(amount=amount)
    response, cpu_seconds = signed_surepay(client, body)
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "amount", "message": message}]
    assert dead_letter_for(body).errors == [{"field": "amount", "message": message[:500]}]
    assert cpu_seconds < 0.5


def test_a_nul_in_a_stored_field_is_a_field_error_not_a_database_error(client, account):
    # The decoder refuses \u0000 escapes; a NUL could still come from an adapter, so the
    # NormalizedEvent check refuses it too.
    event = NormalizedEvent(event_id="evt-1", event_type="x", status=PaymentStatus.SUCCEEDED, external_txn_id="a\x00b",
                            currency="UGX", amount_minor=1)
    with pytest.raises(PayloadInvalid) as refused:
        normalized_event_check(event)
    assert refused.value.errors == [{"field": "external_txn_id", "message": "external_txn_id contains a NUL character"}]


def test_refund_and_dispute_reports_are_checked_against_the_fact_they_become():
    from providers.base import DisputeReport, RefundReport

    event = NormalizedEvent(
        event_id="evt-1", event_type="x", status=None, currency="UGX",
        refunds=(RefundReport(key="r" * 256, amount_minor=1), RefundReport(key="r2", amount_minor=10**16)),
        disputes=(DisputeReport(key="dp_1", amount_minor=5, status="maybe"),),
    )  # fmt: skip
    with pytest.raises(PayloadInvalid) as refused:
        normalized_event_check(event)
    assert refused.value.errors == [
        {"field": "refunds", "message": "refunds key is longer than 255 characters"},
        {"field": "refunds", "message": "refunds amount must be a whole number from 0 to 1000000000000000"},
        {"field": "disputes", "message": "disputes status must be one of open, won, lost"},
    ]


def test_stored_text_limits_are_the_models_column_lengths():
    # Every text field of NormalizedEvent says where it is stored, so a new one cannot skip the check.
    text_fields = {f.name for f in dataclasses.fields(NormalizedEvent) if f.type in ("str", str)}
    assert text_fields == set(STORED_TEXT_FIELDS)
    assert stored_text_limits() == {
        "event_id": WebhookEvent._meta.get_field("external_event_id").max_length,
        "event_type": WebhookEvent._meta.get_field("event_type").max_length,
        "external_txn_id": min(
            Payment._meta.get_field("external_txn_id").max_length, TransactionFact._meta.get_field("txn_id").max_length
        ),
        "currency": Payment._meta.get_field("currency").max_length,
        "reference": min(
            Payment._meta.get_field("provider_reference").max_length, TransactionFact._meta.get_field("reference").max_length
        ),
        "checkout_id": Payment._meta.get_field("provider_checkout_id").max_length,
        "charge_id": Payment._meta.get_field("provider_charge_id").max_length,
        "ignored_reason": WebhookEvent._meta.get_field("result").max_length,
        "provider_student_id": Payment._meta.get_field("provider_student_id").max_length,
    }


@pytest.mark.parametrize("name", sorted(STORED_TEXT_FIELDS))
def test_each_stored_field_one_over_its_column_is_refused_at_the_edge(name):
    limit = stored_text_limits()[name]
    values = {"event_id": "evt-1", "event_type": "t", "status": PaymentStatus.SUCCEEDED, "currency": "UGX", "amount_minor": 1}
    values[name] = "x" * (limit + 1)
    with pytest.raises(PayloadInvalid) as refused:
        normalized_event_check(NormalizedEvent(**values))
    assert {"field": name, "message": f"{name} is longer than {limit} characters"} in refused.value.errors
    values[name] = "x" * limit if name != "currency" else "UGX"
    normalized_event_check(NormalizedEvent(**values))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"amount_minor": 10**16}, {"field": "amount_minor", "message": "amount_minor must be a whole number from 0 to 1000000000000000"}),
        ({"amount_minor": -1}, {"field": "amount_minor", "message": "amount_minor must be a whole number from 0 to 1000000000000000"}),
        ({"refunded_total_minor": 10**16}, {"field": "refunded_total_minor", "message": "refunded_total_minor must be a whole number from 0 to 1000000000000000"}),
        ({"currency": "XYZ"}, {"field": "currency", "message": "unknown currency 'XYZ'"}),
        ({"event_id": "  "}, {"field": "event_id", "message": "event_id must not be empty"}),
        ({"payer": {"email": "x" * 255}}, {"field": "payer", "message": "payer detail is longer than 254 characters"}),
        ({"payer": {"name": "\ud800"}}, {"field": "payer", "message": "payer detail contains a lone UTF-16 surrogate"}),
        ({"payer": {"name": ["a"]}}, {"field": "payer", "message": "payer detail must be text, got list"}),
    ],
)
def test_amounts_currency_and_payer_are_checked_centrally(changes, error):
    values = {"event_id": "evt-1", "event_type": "t", "status": PaymentStatus.SUCCEEDED, "currency": "UGX", "amount_minor": 1}
    with pytest.raises(PayloadInvalid) as refused:
        normalized_event_check(NormalizedEvent(**{**values, **changes}))
    assert refused.value.errors == [error]


def test_a_school_code_header_no_school_can_have_is_not_looked_up(client, account, django_assert_max_num_queries):
    body = surepay_body()
    with django_assert_max_num_queries(1):  # the refusal's audit entry only
        response = post_webhook(client, body, school_code="ng\x00' OR 1=1", signature=sign(body))
    assert response.status_code == 401
    assert response.json()["code"] == "account_unknown"
    assert AuditLog.objects.get().details["school_code"] == "ng\ufffd' OR 1=1"


# --- Signed bodies of other providers ------------------------------------------------------------


def test_paystack_amount_with_a_million_digit_exponent_is_400_in_no_time(client, school):
    AccountFactory(school=school, provider="paystack", webhook_secret="sk_test_x", api_key="sk_test_x", test_mode=True)
    body = json.loads(raw("paystack", "charge.success"))
    text = json.dumps(body).replace(f'"amount": {body["data"]["amount"]}', '"amount": 1e1000000').encode()
    assert b"1e1000000" in text
    started = time.process_time()
    response = post(client, "paystack", paystack_delivery(text, "sk_test_x"))
    assert time.process_time() - started < 0.5
    assert response.status_code == 400
    assert dead_letter_for(text)


def test_omise_timestamp_of_thousands_of_digits_is_401_not_500(client, school):
    account = AccountFactory(school=school, provider="omise", webhook_secret="c2VjcmV0", api_key="skey_test_x", test_mode=True)
    body = raw("omise", "charge.complete")
    timestamp = "9" * 5000
    signature = hmac.new(base64.b64decode("c2VjcmV0"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    delivery = Delivery(body, {"Omise-Signature": signature, "Omise-Signature-Timestamp": timestamp})
    response = post(client, "omise", delivery)
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


# --- M-Pesa: the URL token comes first ------------------------------------------------------------


@pytest.fixture
def mpesa_started(school):
    account = AccountFactory(school=school, provider="mpesa", webhook_secret="mpesa-secret", test_mode=True)
    return PaymentFactory(account=account, external_txn_id=None, provider_checkout_id="ws_CO_1", currency="KES",
                          amount_minor=150_000)


@pytest.mark.parametrize("token", ["0" * 63, "g" * 64, "x" * 5000, "A" * 64])
def test_mpesa_token_that_cannot_be_ours_is_401_before_the_body_is_read(client, mpesa_started, token):
    body = b'{"Body":' * 25_000 + b"1" + b"}" * 25_000
    with mock.patch("providers.base.loads_limited", side_effect=AssertionError("the body was read")):
        response = post(client, "mpesa", mpesa_delivery(body, token))
    assert response.status_code == 401
    assert response.json() == {"detail": "Unknown CheckoutRequestID or wrong callback token", "code": "signature_invalid"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "checkout_id",
    ["\\u0000", "ws_CO_" + "1" * 200, "\\ud800"],
    ids=["nul", "longer-than-the-column", "lone-surrogate"],
)
def test_mpesa_unusable_checkout_id_is_401_unstored(client, mpesa_started, checkout_id):
    body = json.dumps({"Body": {"stkCallback": {"CheckoutRequestID": "PLACEHOLDER", "ResultCode": 0}}})
    body = body.replace("PLACEHOLDER", checkout_id).encode()
    token = callback_token("mpesa-secret", mpesa_started.pk)
    response = post(client, "mpesa", mpesa_delivery(body, token))
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()


def test_mpesa_deeply_nested_body_with_a_real_token_is_401_unstored(client, mpesa_started):
    token = callback_token("mpesa-secret", mpesa_started.pk)
    body = b'{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}}"
    response = post(client, "mpesa", mpesa_delivery(body, token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Callback does not name a CheckoutRequestID"


@pytest.mark.parametrize(
    "value",
    [Decimal("1E+1000000"), Decimal("1E+999999999"), "9" * 100_000, "²", "١٢٣"],
    ids=["exp-million", "exp-billion", "long-digits", "superscript", "arabic-digits"],
)
def test_integer_units_and_major_amounts_refuse_before_converting(value):
    started = time.process_time()
    with pytest.raises(MoneyError):
        integer_units(value)
    with pytest.raises(MoneyError):
        parse_major_amount(value, "KES")
    assert time.process_time() - started < 0.1
