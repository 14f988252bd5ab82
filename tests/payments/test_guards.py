"""Input no view can use is a 400, never a server error: NUL in addresses and query strings
(public pages, API, admin filters and searches), admin actions with malformed selected ids, and
API amounts and JSON bodies beyond the limits."""

import pytest
from django.contrib.auth import get_user_model

from payments.models import Payment, PaymentRequest, WebhookEvent
from tests.admin.conftest import world  # noqa: F401 - the admin tests' two schools
from tests.payments.test_api import api_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.org", "pw-1234567890"))
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/pay/%00/",
        "/pay/abc%00def/checkout",
        "/payments/00000000-0000-0000-0000-000000000000/status?x=%00",
        "/admin/payments/payment/?status__exact=%00",
        "/admin/payments/payment/?q=%00",
        "/admin/payments/webhookevent/?account__provider=%00",
        "/admin/auth/user/?q=a%00",
    ],
)
def test_a_nul_in_the_address_is_400(superuser_client, url):
    response = superuser_client.get(url)
    assert response.status_code == 400
    assert response.content == b"The address contains a NUL character."


def test_a_nul_in_an_api_query_is_a_json_400(staff):
    response = api_for(staff).get("/api/payment-requests/?status=%00")
    assert response.status_code == 400
    assert response.json() == {"detail": "The address contains a NUL character.", "code": "bad_request"}


@pytest.mark.parametrize(
    ("model", "action", "selected"),
    [
        ("payments/payment", "retry_quickbooks_sync", ["abc"]),
        ("payments/payment", "delete_selected", ["00000000-0000-0000-0000-00000000000g"]),
        ("payments/webhookevent", "replay_events", ["abc"]),
        ("payments/webhookevent", "replay_events", ["1", "\x00"]),
        ("payments/paymentrequest", "cancel_requests", ["1.5"]),
        ("auth/user", "delete_selected", ["x"]),
    ],
)
def test_an_admin_action_on_malformed_ids_is_400_and_changes_nothing(superuser_client, world, model, action, selected):  # noqa: F811
    before = (Payment.objects.count(), PaymentRequest.objects.filter(status="open").count(), list(WebhookEvent.objects.values_list("status", flat=True)))
    response = superuser_client.post(f"/admin/{model}/", {"action": action, "_selected_action": selected, "index": 0})
    assert response.status_code == 400
    assert response.content == b"The selection names something that is not one of these objects."
    after = (Payment.objects.count(), PaymentRequest.objects.filter(status="open").count(), list(WebhookEvent.objects.values_list("status", flat=True)))
    assert after == before


def test_an_admin_action_on_an_id_beyond_the_column_finds_nothing(superuser_client, world):  # noqa: F811
    response = superuser_client.post(
        "/admin/payments/webhookevent/", {"action": "replay_events", "_selected_action": ["9" * 30], "index": 0}
    )
    assert response.status_code == 302  # back to the list, which says nothing was selected


@pytest.mark.parametrize(
    ("amount_minor", "error"),
    [
        (10**19, "amount_minor 10000000000000000000 is implausibly large"),
        (10**16, "amount_minor 10000000000000000 is implausibly large"),
    ],
)
def test_api_amount_minor_beyond_the_plausible_is_refused_like_the_string_form(staff, student, amount_minor, error):
    api = api_for(staff)
    response = api.post("/api/payment-requests/", {"student_id": "STU-0001", "description": "Fees", "amount_minor": amount_minor}, format="json")
    assert response.status_code == 400
    assert response.json() == {"amount_minor": [error]}
    typed = api.post("/api/payment-requests/", {"student_id": "STU-0001", "description": "Fees", "amount": "1" + "0" * 16}, format="json")
    assert typed.json() == {"amount": ["amount '10000000000000000' is implausibly large"]}
    assert not PaymentRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"amount_minor": ' + b"9" * 5000 + b"}", "JSON parse error - a number has more than 40 characters"),
        (b'{"a": ' + b"[" * 1_000 + b"]" * 1_000 + b"}", "JSON parse error - nesting deeper than 32 levels"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON parse error - more than 5000 values"),
        (b'{"description": "\\u0000"}', "JSON parse error - a string contains a NUL character or a lone UTF-16 surrogate"),
        (b'{"amount_minor": 1e999999}', "JSON parse error - a number's exponent is beyond ±40"),
    ],
)
def test_api_json_beyond_the_decoders_limits_is_400(staff, body, detail):
    response = api_for(staff).generic("POST", "/api/payment-requests/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": detail}
