"""M-Pesa paybill (C2B): URL registration, validation by student number and amount due, and a
confirmation that creates the student's payment, which counts as paid only once Daraja's
Transaction Status says its receipt is completed. The same guards as the STK callback: a token per
account in the path, the IP allowlist, nothing believed unconfirmed."""

import json

import pytest
from django.core.management import call_command

from core.status import PaymentStatus as S
from payments.models import AuditLog, Payment, ProviderStudentLink, WebhookEvent
from providers.mpesa.c2b import c2b_token, status_token
from providers.mpesa.fake import FakeDaraja
from providers.registry import get_provider
from tests.conftest import process_pending
from tests.factories import AccountFactory, PaymentRequestFactory, StudentFactory
from tests.providers.helpers import fake_server

pytestmark = pytest.mark.django_db

SECRET = "mpesa-c2b-secret-1"
PAYBILL = "600638"
CREDENTIALS = {"consumer_key": "ck_school", "consumer_secret": "cs_school", "shortcode": "174379", "passkey": "pk_school",
               "paybill_number": PAYBILL, "initiator_name": "apiop", "security_credential": "sc_school"}  # fmt: skip


@pytest.fixture
def kenya(school):
    school.currency = "KES"
    school.save()
    return school


@pytest.fixture
def account(kenya, settings):
    settings.PUBLIC_BASE_URL = "https://pay.example.org"
    return AccountFactory(school=kenya, provider="mpesa", webhook_secret=SECRET, credentials=CREDENTIALS, test_mode=True)


@pytest.fixture
def fake(settings):
    daraja = FakeDaraja(consumer_key="ck_school", consumer_secret="cs_school", passkey="pk_school",
                        initiator_name="apiop", security_credential="sc_school")  # fmt: skip
    with fake_server(daraja, settings, "MPESA_SANDBOX_API_BASE_URL") as served:
        yield served


@pytest.fixture
def student(kenya):
    return StudentFactory(school=kenya, student_number="ADM-2041", full_name="Amina Wanjiru")


def url(account, kind: str, token: str | None = None) -> str:
    return f"/api/webhooks/c2b/{account.school.code}/{token or c2b_token(SECRET, account.pk)}/{kind}"


def send(client, account, kind, body, token=None, query=""):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url(account, kind, token) + query, data=data, content_type="application/json")


def test_registering_the_urls_sends_both_with_the_account_token(account, fake):
    call_command("register_paybill", "ng")
    body = fake.registered[PAYBILL]
    token = c2b_token(SECRET, account.pk)
    assert body == {"ShortCode": PAYBILL, "ResponseType": "Completed",
                    "ConfirmationURL": f"https://pay.example.org/api/webhooks/c2b/ng/{token}/confirmation",
                    "ValidationURL": f"https://pay.example.org/api/webhooks/c2b/ng/{token}/validation"}  # fmt: skip
    assert AuditLog.objects.get(action="paybill.registered").details == {"shortcode": PAYBILL, "response_type": "Completed"}


def test_daraja_refuses_urls_that_are_not_https(account, fake, settings):
    from django.core.management.base import CommandError

    settings.PUBLIC_BASE_URL = "http://pay.example.org"
    with pytest.raises(CommandError, match="Invalid ConfirmationURL"):
        call_command("register_paybill", "ng")
    assert fake.registered == {}


def test_an_account_without_paybill_credentials_is_told_what_is_missing(kenya, fake):
    from django.core.management.base import CommandError

    AccountFactory(school=kenya, provider="mpesa", webhook_secret=SECRET, test_mode=True,
                   credentials={k: v for k, v in CREDENTIALS.items() if k != "paybill_number"})  # fmt: skip
    with pytest.raises(CommandError, match="not set up for paybill payments.*paybill_number"):
        call_command("register_paybill", "ng")


@pytest.mark.parametrize(("account_number", "shillings", "expected"), [
    ("ADM-2041", 4500, {"ResultCode": "0", "ResultDesc": "Accepted"}),
    (" adm-2041 ", 100, {"ResultCode": "0", "ResultDesc": "Accepted"}),
    ("ADM-9999", 4500, {"ResultCode": "C2B00012", "ResultDesc": "Rejected: unknown account number"}),
    ("", 4500, {"ResultCode": "C2B00012", "ResultDesc": "Rejected: unknown account number"}),
    ("ADM-2041", 4501, {"ResultCode": "C2B00013", "ResultDesc": "Rejected: invalid amount"}),  # more than is due
])  # fmt: skip
def test_validation_accepts_a_known_student_number_up_to_the_amount_due(client, account, fake, student, account_number, shillings, expected):
    PaymentRequestFactory(school=account.school, student=student, amount_minor=450_000, currency="KES")
    body = fake.pay_bill(PAYBILL, account_number, shillings)
    response = send(client, account, "validation", body)
    assert (response.status_code, response.json()) == (200, expected)
    assert not Payment.objects.exists()


def test_validation_refuses_another_business_number_and_cents(client, account, fake, student):
    other = send(client, account, "validation", fake.pay_bill("174379", "ADM-2041", 10))
    assert other.json() == {"ResultCode": "C2B00015", "ResultDesc": "Rejected: wrong business number"}
    cents = {**fake.pay_bill(PAYBILL, "ADM-2041", 10), "TransAmount": "10.50"}
    assert send(client, account, "validation", cents).json() == {"ResultCode": "C2B00013", "ResultDesc": "Rejected: invalid amount"}


def test_a_confirmation_is_paid_only_once_transaction_status_says_completed(client, account, fake, student, fake_directory):
    request = PaymentRequestFactory(school=account.school, student=student, amount_minor=450_000, currency="KES")
    body = fake.pay_bill(PAYBILL, "adm-2041", 4500)
    receipt = body["TransID"]
    response = send(client, account, "confirmation", body)
    assert (response.status_code, response.json()) == (
        200, {"ResultCode": 0, "ResultDesc": "Accepted", "event_id": f"c2b:{receipt}", "status": "pending"})
    process_pending()
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_minor, payment.currency, payment.external_txn_id) == (S.PROCESSING, 450_000, "KES", receipt)
    assert (payment.student, payment.mapping_status) == (student, "mapped")
    assert ProviderStudentLink.objects.get().source == "account_number"
    query = fake.status_queries[-1]
    assert (query["TransactionID"], query["PartyA"], query["IdentifierType"], query["CommandID"]) == (
        receipt, PAYBILL, "4", "TransactionStatusQuery")
    assert query["ResultURL"] == "https://pay.example.org" + url(account, "result") + f"?t={status_token(SECRET, receipt)}"
    result = send(client, account, "result", fake.status_result(receipt), query=f"?t={status_token(SECRET, receipt)}")
    assert result.status_code == 200 and result.json()["ResultCode"] == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_minor) == (S.SUCCEEDED, 450_000)
    request.refresh_from_db()
    assert request.status == "open"  # a paybill payment is the student's, not one pay link's


def test_a_forged_confirmation_never_counts(client, account, fake, student, fake_directory):
    forged = {**fake.pay_bill(PAYBILL, "ADM-2041", 4500), "TransID": "RKTFORGED01"}
    assert send(client, account, "confirmation", forged).status_code == 200
    process_pending()
    answer = send(client, account, "result", fake.status_result("RKTFORGED01"), query=f"?t={status_token(SECRET, 'RKTFORGED01')}")
    assert (answer.status_code, answer.json()["result"]) == (200, "no answer: The initiator information is invalid.")
    assert Payment.objects.get().status == S.PROCESSING  # never succeeded; staff see it waiting


def test_a_declined_receipt_fails_the_payment(client, account, fake, student, fake_directory):
    body = fake.pay_bill(PAYBILL, "ADM-2041", 4500, status="Declined")
    send(client, account, "confirmation", body)
    process_pending()
    send(client, account, "result", fake.status_result(body["TransID"]), query=f"?t={status_token(SECRET, body['TransID'])}")
    assert Payment.objects.get().status == S.FAILED


def test_the_amount_is_daraja_s_not_the_confirmation_s(client, account, fake, student, fake_directory):
    body = fake.pay_bill(PAYBILL, "ADM-2041", 4500)
    send(client, account, "confirmation", {**body, "TransAmount": "45000.00"})
    process_pending()
    send(client, account, "result", fake.status_result(body["TransID"]), query=f"?t={status_token(SECRET, body['TransID'])}")
    payment = Payment.objects.get()
    assert (payment.status, payment.amount_minor) == (S.SUCCEEDED, 450_000)


def test_a_result_for_another_receipt_is_refused(client, account, fake, student, fake_directory):
    body = fake.pay_bill(PAYBILL, "ADM-2041", 4500)
    send(client, account, "confirmation", body)
    process_pending()
    response = send(client, account, "result", fake.status_result(body["TransID"]), query=f"?t={status_token(SECRET, 'OTHER')}")
    assert (response.status_code, response.json()) == (401, {"detail": "Wrong result token for this receipt", "code": "signature_invalid"})
    assert Payment.objects.get().status == S.PROCESSING


def test_a_redelivered_confirmation_is_one_payment(client, account, fake, student, fake_directory):
    body = fake.pay_bill(PAYBILL, "ADM-2041", 4500)
    send(client, account, "confirmation", body)
    again = send(client, account, "confirmation", body)
    assert (again.status_code, again.json()["event_id"]) == (200, f"c2b:{body['TransID']}")
    process_pending()
    assert Payment.objects.count() == 1 and WebhookEvent.objects.count() == 1


def test_an_unknown_account_number_is_kept_for_staff(client, account, fake, fake_directory):
    send(client, account, "confirmation", fake.pay_bill(PAYBILL, "NOBODY-1", 100))
    process_pending()
    payment = Payment.objects.get()
    assert (payment.provider_student_id, payment.student) == ("NOBODY-1", None)
    assert not ProviderStudentLink.objects.exists()


@pytest.mark.parametrize("kind", ["validation", "confirmation", "result", "timeout"])
def test_a_wrong_token_is_refused_and_stores_nothing(client, account, fake, kind):
    response = send(client, account, kind, fake.pay_bill(PAYBILL, "ADM-2041", 10), token="0" * 64)
    assert (response.status_code, response.json()) == (401, {"detail": "Wrong C2B URL token", "code": "signature_invalid"})
    assert not WebhookEvent.objects.exists()


def test_the_ip_allowlist_applies(client, account, fake):
    account.ip_allowlist = "196.201.214.200/29"
    account.save()
    response = send(client, account, "confirmation", fake.pay_bill(PAYBILL, "ADM-2041", 10))
    assert (response.status_code, response.json()["code"]) == (403, "ip_not_allowed")
    assert not WebhookEvent.objects.exists()


def test_an_unknown_school_and_a_get_are_refused(client, account):
    response = client.post(f"/api/webhooks/c2b/nowhere/{'a' * 64}/confirmation", data=b"{}", content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (401, "account_unknown")
    assert client.get(url(account, "confirmation")).status_code == 405


def test_a_bad_confirmation_is_a_dead_letter_with_its_field(client, account, fake):
    body = {k: v for k, v in fake.pay_bill(PAYBILL, "ADM-2041", 10).items() if k != "TransAmount"}
    response = send(client, account, "confirmation", body)
    assert (response.status_code, response.json()) == (400, {
        "detail": "Invalid webhook payload", "code": "invalid_payload", "errors": [{"field": "TransAmount", "message": "Field required"}]})
    assert WebhookEvent.objects.get().status == "rejected"
    assert send(client, account, "confirmation", b"not json").status_code == 400


def test_a_garbled_result_is_refused(client, account):
    response = send(client, account, "result", {"Result": {"nothing": 1}}, query="?t=x")
    assert (response.status_code, response.json()["code"]) == (400, "result_refused")


def test_the_timeout_is_acknowledged(client, account):
    response = send(client, account, "timeout", {"Result": {}})
    assert (response.status_code, response.json()) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})


def test_the_stk_endpoint_still_refuses_a_c2b_body(client, account, fake):
    body = json.dumps(fake.pay_bill(PAYBILL, "ADM-2041", 10)).encode()
    response = client.post("/api/webhooks/mpesa/ng?t=" + "a" * 64, data=body, content_type="application/json")
    assert response.status_code == 401 and not WebhookEvent.objects.exists()


def test_the_janitor_asks_transaction_status_again(account, fake, student):
    payment = Payment.objects.create(school=account.school, account=account, provider="mpesa", external_txn_id="RKT0000009",
                                     amount_minor=100, currency="KES", status=S.PROCESSING)  # fmt: skip
    status = get_provider("mpesa").fetch_status(payment=payment)
    assert status.status == S.PROCESSING and fake.status_queries[-1]["TransactionID"] == "RKT0000009"


def test_the_pay_page_shows_the_paybill_beside_the_prompt(client, account, student):
    request = PaymentRequestFactory(school=account.school, student=student, amount_minor=450_000, currency="KES")
    page = client.get(f"/pay/{request.token}/").content.decode()
    assert 'data-testid="paybill-number">600638<' in page and 'data-testid="paybill-account">ADM-2041<' in page
    assert "Send M-Pesa (Daraja) prompt" in page


def test_staff_register_the_paybill_from_the_admin(client, account, fake):
    from tests.admin.conftest import make_school_staff

    surepay = AccountFactory(school=account.school, provider="surepay")
    client.force_login(make_school_staff("bursar-ng", account.school))
    response = client.post("/admin/payments/provideraccount/", {"action": "register_paybill",
                                                                 "_selected_action": [account.pk, surepay.pk]}, follow=True)  # fmt: skip
    texts = [str(m) for m in response.context["messages"]]
    assert f"Registered paybill {PAYBILL} of ng with Daraja (Success)" in texts
    assert any("not an M-Pesa account, skipped" in t for t in texts)
    assert PAYBILL in fake.registered
    assert AuditLog.objects.get(action="paybill.registered").actor == "bursar-ng"


def test_no_paybill_instructions_without_a_paybill(client, account, student):
    account.credentials = {k: v for k, v in CREDENTIALS.items() if k != "paybill_number"}
    account.save()
    request = PaymentRequestFactory(school=account.school, student=student, amount_minor=450_000, currency="KES")
    assert 'data-testid="paybill"' not in client.get(f"/pay/{request.token}/").content.decode()
