"""``make run``'s demo data lets a newcomer pay a pay link in a browser (the walkthrough in docs/parents.md)."""

import pytest
from knox.crypto import hash_token
from knox.models import AuthToken

from core.status import PaymentStatus
from demo.seed import demo_seed
from payments import services
from payments.models import PaymentRequest, StaffMembership, Student
from providers.base import NormalizedStatus

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _demo_dir(settings, tmp_path):
    settings.BASE_DIR = tmp_path


def test_the_demo_has_an_open_payment_request_and_an_api_token(client):
    login = demo_seed()
    payment_request = PaymentRequest.objects.get(school__code="ng")
    assert login.pay_path == f"/pay/{payment_request.token}/"
    assert (payment_request.status, payment_request.amount_minor, payment_request.currency) == ("open", 450_000, "UGX")
    assert payment_request.student.full_name == "Amina Nakato"
    assert Student.objects.filter(school__code="ng").count() == 3
    bursar = AuthToken.objects.get(digest=hash_token(login.api_token)).user
    assert (bursar.username, bursar.is_staff, bursar.is_superuser) == ("bursar", True, False)
    assert list(StaffMembership.objects.filter(user=bursar).values_list("school__code", flat=True)) == ["ng"]
    html = client.get(login.pay_path).content.decode()
    assert "UGX 450,000" in html and "Pay with Dummy (development)" in html and "Pay with Stripe" in html
    # Stripe in test mode on the fake: the banner says so; the Kenyan school pays by M-Pesa, in Swahili.
    assert 'data-testid="test-banner"' in html
    kenya = PaymentRequest.objects.get(school__code="nrb")
    assert login.kenya_pay_path == kenya.pay_path and (kenya.amount_minor, kenya.currency) == (150_000, "KES")
    assert "Tuma ombi la M-Pesa (Daraja)" in client.get(login.kenya_pay_path).content.decode()
    assert {(slug, code) for slug, code, _ in login.webhook_endpoints} == {
        ("stripe", "ng"), ("flutterwave", "ng"), ("paystack", "nrb"), ("chapa", "add"), ("omise", "bkk"),
    }  # fmt: skip
    assert [code for code, _ in login.regional_pay_paths] == ["nrb", "add", "bkk"]


def test_running_the_demo_again_keeps_one_open_request_and_makes_a_new_one_once_paid():
    first = demo_seed()
    assert demo_seed() == first
    payment = services.payment_checkout_start(payment_request_id=PaymentRequest.objects.get(school__code="ng").pk, provider="dummy").payment
    services.payment_provider_status_apply(
        payment_id=payment.pk,
        status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"),
        source="demo",
    )
    third = demo_seed()
    assert third.pay_path != first.pay_path and third.api_token == first.api_token
    assert sorted(PaymentRequest.objects.filter(school__code="ng").values_list("status", flat=True)) == ["open", "paid"]
