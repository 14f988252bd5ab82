"""The fake Africa's Talking SMS API refuses what the real one refuses, and our backend reads
each of its answers right (https://developers.africastalking.com/docs/sms/sending/bulk)."""

from __future__ import annotations

import httpx
import pytest

from payments.sms import SmsInDoubt, SmsMessage, SmsNotSent, SmsRefused, get_sms_backend
from tests.payments.messaging import AT_KEY, AT_SENDER, AT_USERNAME


@pytest.fixture
def post(settings, sms_gateway):
    def send(data=None, *, headers=None, content=None, path="/version1/messaging", method="POST"):
        base = settings.AFRICASTALKING_API_URL.removesuffix("/version1/messaging")
        default_headers = {"apiKey": AT_KEY, "Accept": "application/json"}
        return httpx.request(
            method, base + path, data=data, content=content, headers={**default_headers, **(headers or {})}, timeout=5
        )

    return send


GOOD = {"username": AT_USERNAME, "to": "+256772123456", "message": "Hello", "from": AT_SENDER}


def test_a_good_message_is_taken(post, sms_gateway):
    response = post(GOOD)
    assert response.status_code == 201
    assert response.json() == {
        "SMSMessageData": {
            "Message": "Sent to 1/1 Total Cost: KES 0.8000",
            "Recipients": [
                {"statusCode": 101, "number": "+256772123456", "status": "Success", "cost": "KES 0.8000", "messageId": "ATXid_00000001"}
            ],
        }
    }
    assert [(sms.to, sms.body, sms.sender) for sms in sms_gateway.sent] == [("+256772123456", "Hello", AT_SENDER)]


@pytest.mark.parametrize(
    "change, status, text",
    [
        ({"headers": {"apiKey": "wrong"}}, 401, "The supplied authentication is invalid"),
        ({"data": {**GOOD, "username": "someone-else"}}, 401, "The supplied authentication is invalid"),
        ({"data": {k: v for k, v in GOOD.items() if k != "to"}}, 400, "Request is missing required form field 'to'"),
        ({"data": {**GOOD, "message": " "}}, 400, "Request is missing required form field 'message'"),
        (
            {"data": None, "content": b'{"to": "+256772123456"}', "headers": {"Content-Type": "application/json"}},
            400,
            "Request body must be application/x-www-form-urlencoded",
        ),
        ({"path": "/version1/messages"}, 404, "Not Found"),
        ({"method": "GET", "data": None}, 404, "Not Found"),
    ],
)
def test_refused_as_the_real_api_refuses(post, sms_gateway, change, status, text):
    kwargs = {"data": GOOD, **change}
    response = post(**kwargs)
    assert (response.status_code, response.text) == (status, text)
    assert sms_gateway.sent == []


@pytest.mark.parametrize(
    "data, code, status",
    [
        ({**GOOD, "to": "0772123456"}, 403, "InvalidPhoneNumber"),
        ({**GOOD, "from": "NOTREGISTERED"}, 402, "InvalidSenderId"),
    ],
)
def test_a_recipient_refused_is_told_in_a_201(post, sms_gateway, data, code, status):
    response = post(data)
    assert response.status_code == 201
    [recipient] = response.json()["SMSMessageData"]["Recipients"]
    assert (recipient["statusCode"], recipient["status"]) == (code, status)
    assert response.json()["SMSMessageData"]["Message"] == "Sent to 0/1 Total Cost: KES 0.0000"
    assert sms_gateway.sent == []


def test_without_accept_json_it_answers_xml(post):
    response = post(GOOD, headers={"Accept": "*/*"})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/xml"


def test_no_balance(post, sms_gateway):
    sms_gateway.balance_messages = 0
    [recipient] = post(GOOD).json()["SMSMessageData"]["Recipients"]
    assert (recipient["statusCode"], recipient["status"]) == (405, "InsufficientBalance")


def test_the_backend_reads_every_answer(settings, sms_gateway):
    backend = get_sms_backend()
    message = SmsMessage(to="+256772123456", body="Hello")
    assert backend.send(message).message_id == "ATXid_00000001"
    sms_gateway.fail_next(1, 429)
    with pytest.raises(SmsNotSent, match=r"^Africa's Talking answered 429$"):
        backend.send(message)
    sms_gateway.balance_messages = 0
    with pytest.raises(SmsRefused, match=r"^Africa's Talking: InsufficientBalance \(405\)$"):
        backend.send(message)
    settings.AFRICASTALKING_SENDER_ID = "NOTREGISTERED"
    sms_gateway.balance_messages = None
    with pytest.raises(SmsRefused, match=r"^Africa's Talking: InvalidSenderId \(402\)$"):
        get_sms_backend().send(message)
    settings.AFRICASTALKING_API_URL = settings.AFRICASTALKING_API_URL.replace("messaging", "nowhere")
    with pytest.raises(SmsRefused, match=r"^Africa's Talking refused the request \(404\): Not Found$"):
        get_sms_backend().send(message)


def test_a_gateway_that_cannot_be_reached_sent_nothing(settings):
    from tests.conftest import free_port

    settings.SMS_BACKEND = "payments.sms.africastalking.AfricasTalkingSmsBackend"
    settings.AFRICASTALKING_API_URL = f"http://127.0.0.1:{free_port()}/version1/messaging"
    settings.AFRICASTALKING_USERNAME, settings.AFRICASTALKING_API_KEY = AT_USERNAME, AT_KEY
    with pytest.raises(SmsNotSent, match=r"^Africa's Talking could not be reached: ConnectError$"):
        get_sms_backend().send(SmsMessage(to="+256772123456", body="Hello"))


def test_an_unreadable_taken_answer_is_in_doubt(settings, sms_gateway, monkeypatch):
    backend = get_sms_backend()
    monkeypatch.setattr(backend, "api_key", AT_KEY)
    original = httpx.post

    def without_accept(url, *, data, headers, timeout):
        return original(url, data=data, headers={**headers, "Accept": "*/*"}, timeout=timeout)

    monkeypatch.setattr(httpx, "post", without_accept)
    with pytest.raises(SmsInDoubt, match=r"^Africa's Talking's answer could not be read"):
        backend.send(SmsMessage(to="+256772123456", body="Hello"))


def test_an_unconfigured_backend_refuses(settings):
    settings.SMS_BACKEND = "payments.sms.africastalking.AfricasTalkingSmsBackend"
    settings.AFRICASTALKING_USERNAME = settings.AFRICASTALKING_API_KEY = ""
    with pytest.raises(SmsRefused, match=r"not configured"):
        get_sms_backend().send(SmsMessage(to="+256772123456", body="Hello"))


def test_an_unknown_backend_is_named(settings):
    from payments.sms import SmsBackendUnknown

    with pytest.raises(SmsBackendUnknown, match=r"^SMS_BACKEND 'payments.sms.nope.Backend' cannot be imported$"):
        get_sms_backend("payments.sms.nope.Backend")
    with pytest.raises(SmsBackendUnknown, match=r"is not a BaseSmsBackend$"):
        get_sms_backend("payments.models.School")


def test_outside_development_an_unset_sms_backend_refuses_and_prints_nothing(capsys):
    from config.messages import message_settings
    from payments import sms

    common = {"local_fakes": False, "fakes_base_url": "", "public_base_url": "https://pay.example.org"}
    assert message_settings(app_env="development", **common)["SMS_BACKEND"] == "payments.sms.console.ConsoleSmsBackend"
    path = message_settings(app_env="production", **common)["SMS_BACKEND"]
    assert path == "payments.sms.UnconfiguredSmsBackend"
    with pytest.raises(sms.SmsRefused, match="no SMS gateway"):
        sms.get_sms_backend(path).send(sms.SmsMessage(to="+256772123456", body="https://pay.example.org/receipts/secret/"))
    assert capsys.readouterr().out == ""
