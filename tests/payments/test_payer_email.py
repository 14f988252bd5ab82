"""The payer's email, for providers whose checkout refuses a payer without one (Paystack and
Flutterwave: their initialize APIs require it), and the parent contact staff give a payment
request. The pay page asks for the email only when the chosen provider needs it and staff gave
none; the REST checkout takes it; it is kept in ``Payment.payer`` and sent to the provider. The
fake provider servers refuse what the real APIs refuse, so a missing email cannot hide."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from payments import services
from payments.api_tokens import api_token_create
from payments.models import Payment, PaymentRequest
from providers.base import ReturnUrls
from providers.errors import ProviderRejected
from providers.flutterwave.fake import FakeFlutterwave
from providers.paystack.fake import FakePaystack
from providers.registry import get_provider
from tests.factories import AccountFactory, PaymentFactory, PaymentRequestFactory
from tests.payments.conftest import csrf_token
from tests.providers.helpers import fake_server

pytestmark = pytest.mark.django_db

PAYSTACK_KEY = "sk_test_email0paystack"
FLW_KEY = "FLWSECK_TEST-email00000-X"
URLS = ReturnUrls("https://pay.example.org/payments/1/thanks", "https://pay.example.org/pay/tok")


@pytest.fixture
def naira_school(school):
    school.currency = "NGN"
    school.save()
    return school


@pytest.fixture
def paystack(settings, naira_school):
    AccountFactory(school=naira_school, provider="paystack", webhook_secret=PAYSTACK_KEY, api_key=PAYSTACK_KEY, test_mode=True)
    with fake_server(FakePaystack(secret_key=PAYSTACK_KEY), settings, "PAYSTACK_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def flutterwave(settings, naira_school):
    AccountFactory(school=naira_school, provider="flutterwave", webhook_secret="flw-hash", api_key=FLW_KEY, test_mode=True)
    with fake_server(FakeFlutterwave(secret_key=FLW_KEY), settings, "FLUTTERWAVE_API_BASE_URL") as fake:
        yield fake


@pytest.fixture
def naira_request(naira_school, student):
    return PaymentRequestFactory(school=naira_school, student=student, amount_minor=2_500_000, currency="NGN")


def pay_page(client, payment_request) -> str:
    return client.get(f"/pay/{payment_request.token}/").content.decode()


def pay_now(client, payment_request, provider: str, **fields):
    page = pay_page(client, payment_request)
    return client.post(
        f"/pay/{payment_request.token}/checkout", {"csrfmiddlewaretoken": csrf_token(page), "provider": provider, **fields}
    )


# --- The pay page ----------------------------------------------------------------------------------


def test_the_email_field_is_shown_only_for_providers_that_need_it(client, paystack, naira_request, naira_school):
    AccountFactory(school=naira_school, provider="dummy", webhook_secret="dummy-secret")
    page = pay_page(client, naira_request)
    assert page.count('type="email"') == 1
    assert 'name="email"' in page and 'id="id_paystack_email"' in page and 'autocomplete="email"' in page
    assert '<label for="id_paystack_email">Your email address:</label>' in page
    # Staff gave the parent's email: nobody is asked again.
    naira_request.parent_email = "ada@example.com"
    naira_request.save()
    assert 'type="email"' not in pay_page(client, naira_request)


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("", "Enter your email address: the payment provider needs it."),
        ("ada@", "&#x27;ada@&#x27; is not an email address (for example name@example.com)."),
        ("ada@example.com, bob@example.com", "is not an email address (for example name@example.com)."),
    ],
)
def test_a_missing_or_wrong_email_is_a_400_and_nothing_is_started(client, paystack, naira_request, email, message):
    response = pay_now(client, naira_request, "paystack", email=email)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'aria-invalid="true"' in response.content.decode()
    assert not Payment.objects.exists()
    assert not paystack.requests


@pytest.mark.parametrize("provider", ["paystack", "flutterwave"])
def test_the_email_typed_on_the_pay_page_goes_to_the_provider(client, paystack, flutterwave, naira_request, provider):
    response = pay_now(client, naira_request, provider, email="  ada.obi@example.com ")
    payment = Payment.objects.get()
    assert payment.payer == {"email": "ada.obi@example.com"}
    if provider == "paystack":
        sent = paystack.requests[-1].json()
        assert (sent["email"], sent["amount"], sent["currency"]) == ("ada.obi@example.com", 2_500_000, "NGN")
        assert response.status_code == 302 and response["Location"].startswith("https://checkout.paystack.test/ac_")
    else:
        sent = flutterwave.requests[-1].json()
        assert (sent["customer"], sent["amount"], sent["currency"]) == ({"email": "ada.obi@example.com"}, "25000.00", "NGN")
        assert response["Location"] == f"https://checkout.flutterwave.test/v3/hosted/pay/{payment.reference}"


def test_the_requests_parent_email_and_phone_are_used_when_nobody_is_asked(client, flutterwave, naira_request):
    naira_request.parent_email, naira_request.parent_phone = "ada@example.com", "0803 123 4567"
    naira_request.save()
    assert pay_now(client, naira_request, "flutterwave").status_code == 302
    assert flutterwave.requests[-1].json()["customer"] == {"email": "ada@example.com", "phonenumber": "0803 123 4567"}
    assert Payment.objects.get().payer == {"email": "ada@example.com", "phone": "0803 123 4567"}


def test_an_on_phone_prompt_offers_the_requests_phone(client, promptpay, school, student):
    payment_request = PaymentRequestFactory(school=school, student=student, amount_minor=150_000, currency="KES",
                                            parent_phone="0712 345 678")  # fmt: skip
    assert 'value="0712 345 678"' in pay_page(client, payment_request)
    started = services.payment_checkout_start(payment_request_id=payment_request.pk, provider="promptpay")
    assert started.payment.payer == {"phone": "254712345678"}


# --- The REST checkout --------------------------------------------------------------------------


@pytest.fixture
def api(staff):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=staff)}")
    return client


def checkout(api, payment_request, **body):
    return api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "paystack", **body}, format="json")


def test_the_rest_checkout_takes_the_email(api, paystack, naira_request):
    assert (checkout(api, naira_request).status_code, checkout(api, naira_request).json()) == (400, {
        "detail": "Enter your email address: Paystack needs it to take the payment.", "code": "email_required"})  # fmt: skip
    response = checkout(api, naira_request, email="nope")
    assert (response.status_code, response.json()) == (400, {
        "detail": "'nope' is not an email address (for example name@example.com).", "code": "email_invalid"})  # fmt: skip
    assert not Payment.objects.exists() and not paystack.requests
    response = checkout(api, naira_request, email="ada@example.com")
    assert (response.status_code, response.json()["checkout_url"].startswith("https://checkout.paystack.test/")) == (201, True)
    assert paystack.requests[-1].json()["email"] == "ada@example.com"


def test_the_rest_checkout_falls_back_on_the_requests_parent_email(api, paystack, naira_request):
    naira_request.parent_email = "ada@example.com"
    naira_request.save()
    assert checkout(api, naira_request).status_code == 201
    assert Payment.objects.get().payer == {"email": "ada@example.com"}


# --- Staff give the parent's contact -------------------------------------------------------------


def test_staff_give_the_parents_contact_through_the_api(api, school, student):
    base = {"student_id": "STU-0001", "description": "Fees", "amount": "1,000"}
    response = api.post("/api/payment-requests/", {**base, "parent_email": "ada@example.com", "parent_phone": "+254 712 345678"}, format="json")
    assert (response.status_code, response.json()["parent_email"], response.json()["parent_phone"]) == (
        201, "ada@example.com", "+254 712 345678")
    response = api.post("/api/payment-requests/", {**base, "parent_email": "ada", "parent_phone": "call me"}, format="json")
    assert (response.status_code, response.json()) == (400, {
        "parent_email": ["'ada' is not an email address (for example name@example.com)."],
        "parent_phone": ["'call me' is not a phone number (for example 0712 345 678 or +254 712 345678)."],
    })  # fmt: skip


def test_the_csv_import_takes_the_parents_contact(school, student):
    data = (
        b"student_id,description,amount,parent_email,parent_phone\n"
        b"STU-0001,Fees,1000,ada@example.com,0712 345 678\n"
        b"STU-0001,Bus,500,,\n"
    )
    result = services.payment_requests_import_csv(school=school, data=data)
    assert result.errors == []
    assert sorted(PaymentRequest.objects.values_list("description", "parent_email", "parent_phone")) == [
        ("Bus", "", ""), ("Fees", "ada@example.com", "0712 345 678")]
    bad = services.payment_requests_import_csv(school=school, data=b"student_id,description,amount,parent_email\nSTU-0001,x,1,ada@\n")
    assert [(e.line, e.field, e.message) for e in bad.errors] == [
        (2, "parent_email", "'ada@' is not an email address (for example name@example.com).")]


def test_staff_give_the_parents_email_in_the_admin(client, staff, school, student):
    client.force_login(staff)
    page = client.get("/admin/payments/paymentrequest/add/").content.decode()
    form = {"csrfmiddlewaretoken": csrf_token(page), "school": school.pk, "student": student.pk, "description": "Fees",
            "amount": "1,000", "currency": "", "due_date": "", "parent_email": "ada@", "parent_phone": ""}  # fmt: skip
    response = client.post("/admin/payments/paymentrequest/add/", form)
    assert response.status_code == 200 and "Enter a valid email address." in response.content.decode()
    response = client.post("/admin/payments/paymentrequest/add/", {**form, "parent_email": "ada@example.com"})
    assert response.status_code == 302
    assert PaymentRequest.objects.get().parent_email == "ada@example.com"


# --- The fakes refuse what the real APIs refuse --------------------------------------------------


def _paystack_payment(naira_school, **fields):
    account = naira_school.accounts.get(provider="paystack")
    values = {"external_txn_id": None, "reference": "PEMAIL000001", "amount_minor": 2_500_000, "currency": "NGN",
              "payer": {"email": "ada@example.com"}}  # fmt: skip
    return PaymentFactory(account=account, **{**values, **fields})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": ""}, "Invalid Email Address Passed"),
        ({"email": "ada"}, "Invalid Email Address Passed"),
        ({"amount": "25000.00"}, "Invalid Amount Sent"),  # major units, not kobo
        ({"amount": 25000.5}, "Invalid Amount Sent"),
        ({"amount": 0}, "Invalid Amount Sent"),
        ({"amount": None}, "Invalid Amount Sent"),
    ],
)
def test_the_paystack_fake_refuses_what_paystack_refuses(paystack, body, message):
    import httpx

    payload = {"email": "ada@example.com", "amount": 2_500_000, "currency": "NGN", **body}
    answer = httpx.post(f"{_base(paystack)}/transaction/initialize", json=payload, headers={"Authorization": f"Bearer {PAYSTACK_KEY}"})
    assert (answer.status_code, answer.json()["status"], answer.json()["message"]) == (400, False, message)
    unknown = httpx.get(f"{_base(paystack)}/transaction/verify/NOPE", headers={"Authorization": f"Bearer {PAYSTACK_KEY}"})
    assert (unknown.status_code, unknown.json()) == (400, {"status": False, "message": "Transaction reference not found"})


def test_paystack_checkout_without_an_email_is_refused_before_any_call(paystack, naira_school):
    payment = _paystack_payment(naira_school, payer={})
    with pytest.raises(ProviderRejected, match="needs the payer's email"):
        get_provider("paystack").create_checkout(payment=payment, return_urls=URLS)
    assert not paystack.requests
    # And if a bad one slipped through, Paystack (its fake) says no.
    payment.payer = {"email": "ada@"}
    with pytest.raises(ProviderRejected, match="Invalid Email Address Passed"):
        get_provider("paystack").create_checkout(payment=payment, return_urls=URLS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customer": {}}, "customer.email is required"),
        ({"customer": {"email": "ada"}}, "customer.email must be a valid email"),
        ({"amount": "25000.005"}, "amount must be a number of NGN with at most 2 decimals"),
        ({"amount": "-1"}, "amount must be a number of NGN with at most 2 decimals"),
        ({"currency": "UGX", "amount": "450000.50"}, "amount must be a number of UGX with at most 0 decimals"),
        ({"tx_ref": ""}, "tx_ref is required"),
    ],
)
def test_the_flutterwave_fake_refuses_what_flutterwave_refuses(flutterwave, change, message):
    import httpx

    payload = {"tx_ref": "T1", "amount": "25000.00", "currency": "NGN", "redirect_url": "https://x", "customer": {"email": "ada@example.com"}, **change}
    answer = httpx.post(f"{_base(flutterwave)}/v3/payments", json=payload, headers={"Authorization": f"Bearer {FLW_KEY}"})
    assert (answer.status_code, answer.json()) == (400, {"status": "error", "message": message, "data": None})
    unknown = httpx.get(f"{_base(flutterwave)}/v3/transactions/1/verify", headers={"Authorization": f"Bearer {FLW_KEY}"})
    assert (unknown.status_code, unknown.json()["message"]) == (400, "No transaction was found for this id")


def _base(fake) -> str:
    from django.conf import settings

    return settings.PAYSTACK_API_BASE_URL if isinstance(fake, FakePaystack) else settings.FLUTTERWAVE_API_BASE_URL
