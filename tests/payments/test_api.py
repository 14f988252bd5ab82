"""The REST API: token-authenticated staff see and touch only their own school's payment
requests and payments; the OpenAPI schema and its docs page load nothing from outside."""

import re

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

from core.status import PaymentStatus
from payments.api_tokens import api_token_create
from payments.models import AuditLog, Payment, PaymentRequest
from payments.services import payment_provider_status_apply
from providers.base import NormalizedStatus
from tests.factories import PaymentRequestFactory, StudentFactory
from tests.payments.conftest import make_staff

pytestmark = pytest.mark.django_db


def api_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
    return client


@pytest.fixture
def api(staff):
    return api_for(staff)


@pytest.fixture
def theirs(other_school):
    return PaymentRequestFactory(school=other_school, description="Theirs")


def test_no_token_no_access(client, payment_request, staff):
    assert APIClient().get("/api/payment-requests/").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token nope")
    assert bad.get("/api/payment-requests/").status_code == 401
    # A logged-in admin session does not authenticate the API (tokens only: no CSRF to forge).
    client.force_login(staff)
    assert client.get("/api/payment-requests/").status_code == 401


def test_only_school_staff_may_use_it(school, other_school):
    from django.contrib.auth import get_user_model

    parent = get_user_model().objects.create_user("parent", password="x" * 12)
    assert api_for(parent).get("/api/payments/").status_code == 403
    no_school = make_staff("drifter")
    assert api_for(no_school).get("/api/payments/").status_code == 403
    assert api_for(make_staff("root", superuser=True)).get("/api/payments/").status_code == 200


def test_create_a_request(api, school, student):
    response = api.post(
        "/api/payment-requests/",
        {"student_id": "STU-0001", "description": "Term 2 fees", "amount": "450,000", "due_date": "2026-05-01"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    payment_request = PaymentRequest.objects.get()
    assert body == {
        "id": payment_request.pk,
        "school": "ng",
        "student_id": "STU-0001",
        "student_name": "Amina Nakato",
        "description": "Term 2 fees",
        "amount_minor": 450_000,
        "currency": "UGX",
        "amount_display": "UGX 450,000",
        "due_date": "2026-05-01",
        "parent_email": "",
        "parent_phone": "",
        "status": "open",
        "pay_url": f"https://pay.example.org/pay/{payment_request.token}/",
        "paid_payment_id": None,
        "paid_at": None,
        "created_at": body["created_at"],
    }
    assert AuditLog.objects.get(action="payment_request.created").actor == "bursar"


def test_create_in_minor_units(api, school, student):
    response = api.post(
        "/api/payment-requests/", {"student_id": "STU-0001", "description": "Lab", "amount_minor": 150_050, "currency": "KES"}, format="json"
    )
    assert (response.status_code, response.json()["amount_display"]) == (201, "KES 1,500.50")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"amount": "450,000.5"}, {"amount": ["amount '450,000.5' has decimals but UGX has no minor unit"]}),
        ({"amount": "1", "amount_minor": 1}, {"amount": ["Give the amount (major units) or amount_minor, not both."]}),
        ({"student_id": "STU-9"}, {"student_id": ["Unknown student 'STU-9' at ng."]}),
        ({"school": "kla"}, {"school": ["Unknown school, or not one of yours."]}),
    ],
)
def test_create_refuses_bad_input(api, school, student, other_school, body, errors):
    payload = {"student_id": "STU-0001", "description": "Fees", "amount": "450,000", **body}
    response = api.post("/api/payment-requests/", payload, format="json")
    assert (response.status_code, response.json()) == (400, errors)
    assert PaymentRequest.objects.count() == 0


def test_staff_of_several_schools_say_which(school, student, other_school):
    api = api_for(make_staff("regional", school, other_school))
    payload = {"student_id": "STU-0001", "description": "Fees", "amount": "1"}
    assert api.post("/api/payment-requests/", payload, format="json").json() == {
        "school": ["You are staff of several schools: say which one."]
    }
    assert api.post("/api/payment-requests/", {**payload, "school": "NG"}, format="json").status_code == 201


def test_lists_and_reads_are_scoped_to_the_school(api, payment_request, theirs):
    listing = api.get("/api/payment-requests/").json()
    assert [item["id"] for item in listing["results"]] == [payment_request.pk]
    assert api.get(f"/api/payment-requests/{payment_request.pk}/").status_code == 200
    assert api.get(f"/api/payment-requests/{theirs.pk}/").status_code == 404
    assert api.post(f"/api/payment-requests/{theirs.pk}/checkout", {"provider": "dummy"}, format="json").status_code == 404
    assert api.post(f"/api/payment-requests/{theirs.pk}/cancel").status_code == 404
    assert Payment.objects.count() == 0


def test_list_filters(api, school, payment_request):
    PaymentRequestFactory(school=school, student=StudentFactory(school=school, student_number="STU-0002"), status="cancelled")
    assert len(api.get("/api/payment-requests/?status=open").json()["results"]) == 1
    assert len(api.get("/api/payment-requests/?student_id=STU-0002").json()["results"]) == 1


def test_checkout_returns_the_url_and_reuses_it(api, payment_request, dummy_account):
    response = api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "dummy"}, format="json")
    assert response.status_code == 201
    payment = Payment.objects.get()
    assert response.json() == {
        "checkout_url": f"https://pay.example.org/payments/simulate/{payment.pk}",
        "payment_id": str(payment.pk),
        "status": "pending",
        "reused": False,
        "prompt_sent": False,
        "thanks_url": f"https://pay.example.org/payments/{payment.pk}/thanks",
    }
    again = api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "dummy"}, format="json")
    assert (again.status_code, again.json()["payment_id"], again.json()["reused"]) == (200, str(payment.pk), True)
    intent = AuditLog.objects.get(action="payment.intent")
    assert (intent.actor_type, intent.actor) == ("staff", "bursar")


def test_checkout_refusals(api, payment_request, dummy_account):
    response = api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "nopay"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "provider_unknown")
    # A provider this service knows, but the school has no account with.
    response = api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "stripe"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "provider_unavailable")
    api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "dummy"}, format="json")
    payment = Payment.objects.get()
    payment_provider_status_apply(
        payment_id=payment.pk, status=NormalizedStatus(status=PaymentStatus.SUCCEEDED, amount_minor=450_000, currency="UGX"), source="t"
    )
    response = api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "dummy"}, format="json")
    assert (response.status_code, response.json()) == (409, {"detail": "This has already been paid.", "code": "request_paid"})


def test_payments_list_and_detail(api, payment_request, dummy_account, theirs):
    api.post(f"/api/payment-requests/{payment_request.pk}/checkout", {"provider": "dummy"}, format="json")
    payment = Payment.objects.get()
    other = Payment.objects.create(
        school=theirs.school, provider="manual", method="cash", amount_minor=1, currency="UGX", status="awaiting_review"
    )
    listing = api.get("/api/payments/").json()
    assert [item["id"] for item in listing["results"]] == [str(payment.pk)]
    detail = api.get(f"/api/payments/{payment.pk}/").json()
    assert (detail["payment_request_id"], detail["amount_minor"], detail["status"], detail["student_id"]) == (
        payment_request.pk,
        450_000,
        "pending",
        "STU-0001",
    )
    assert api.get(f"/api/payments/{other.pk}/").status_code == 404
    assert api.get(f"/api/payments/?payment_request={payment_request.pk}").json()["count"] == 1
    assert api.get("/api/payments/?status=succeeded").json()["count"] == 0
    assert api.get("/api/payments/?payment_request=x").status_code == 400


def test_cancel(api, payment_request):
    response = api.post(f"/api/payment-requests/{payment_request.pk}/cancel")
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")


def test_the_schema_describes_the_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert {
        "/api/payment-requests/",
        "/api/payment-requests/{id}/",
        "/api/payment-requests/{id}/checkout",
        "/api/payments/",
        "/api/payments/{id}/",
    } <= set(schema["paths"])
    checkout = schema["paths"]["/api/payment-requests/{id}/checkout"]["post"]
    assert set(checkout["responses"]) >= {"200", "201", "409", "502"}
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_docs_page_loads_only_this_services_assets(client):
    html = client.get("/api/docs/").content.decode()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references
    for reference in references:
        if reference == "/api/docs/?script=":  # Swagger UI's start-up script, as a file (no inline script)
            continue
        assert reference.startswith("/static/"), reference
        assert finders.find(reference.removeprefix("/static/")), reference
    assert "cdn" not in html.lower()
