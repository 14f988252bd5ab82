"""Staff manage their school's endpoints in the admin: the secret is shown once, rotation shows
the new one once, the delivery log replays; another school's endpoints stay out of reach."""

from __future__ import annotations

import pytest
from django.urls import reverse

from events.models import EndpointDelivery, WebhookEndpoint
from payments.models import AuditLog
from tests.admin.conftest import make_school_staff
from tests.events.conftest import apply_event
from tests.events.test_outbound import relay_to_endpoints
from tests.factories import SchoolFactory


@pytest.fixture
def staff(client, school):
    user = make_school_staff("bursar", school)
    client.force_login(user)
    return client


def add(client, school, url, types=""):
    return client.post(
        reverse("admin:events_webhookendpoint_add"),
        {"school": school.pk, "url": url, "description": "ERP", "event_types_text": types},
    )


def test_adding_an_endpoint_shows_its_secret_once(staff, school, receiver):
    response = add(staff, school, receiver.url, "payment.*, webhook.dead_lettered")
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    page = response.content.decode()
    assert endpoint.secret.startswith("whsec_") and endpoint.secret in page
    assert endpoint.event_types == ["payment.*", "webhook.dead_lettered"]
    assert AuditLog.objects.filter(action="webhook_endpoint.created", actor="bursar").exists()
    change = staff.get(reverse("admin:events_webhookendpoint_change", args=[endpoint.pk])).content.decode()
    assert endpoint.secret not in change and "whsec_" not in change


@pytest.mark.parametrize(
    ("url", "types", "error"),
    [
        ("ftp://erp.example.org/hooks", "", "The URL must be an absolute https:// address."),
        ("not a url", "", "Enter a valid URL."),
        ("https://erp.example.org/hooks", "payment.$", "Not an event type: &#x27;payment.$&#x27;"),
    ],
)
def test_a_bad_endpoint_is_refused_with_the_reason(staff, school, url, types, error):
    response = add(staff, school, url, types)
    assert response.status_code == 200 and error in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_an_internal_address_is_refused_in_production_settings(staff, school, settings):
    settings.OUTBOUND_WEBHOOK_ALLOW_HTTP = False
    settings.OUTBOUND_WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    response = add(staff, school, "https://127.0.0.1/hooks")
    assert "resolves to an internal address (127.0.0.1)" in response.content.decode()
    response = add(staff, school, "http://erp.example.org/hooks")
    assert "The URL must use https://." in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_another_schools_school_cannot_be_chosen(staff, school):
    other = SchoolFactory(code="zzz")
    response = add(staff, other, "https://erp.example.org/hooks")
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_rotating_shows_the_new_secret_once(staff, school, receiver):
    add(staff, school, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    old = endpoint.secret
    response = staff.post(
        reverse("admin:events_webhookendpoint_changelist"),
        {"action": "rotate_secret", "_selected_action": [endpoint.pk]},
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    page = response.content.decode()
    assert endpoint.secret in page and old not in page and "keeps signing beside it" in page


def test_the_delivery_log_replays(staff, school, account, receiver):
    add(staff, school, receiver.url)
    endpoint = WebhookEndpoint.objects.get()
    receiver.secrets = [endpoint.secret]
    apply_event(account, event_id="e1", txn="t1", status="pending")
    relay_to_endpoints()
    delivery = EndpointDelivery.objects.get()
    response = staff.post(
        reverse("admin:events_endpointdelivery_changelist"), {"action": "replay", "_selected_action": [delivery.pk]},
        follow=True,
    )  # fmt: skip
    assert "Sent 1: 1 delivered, 0 failed" in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and receiver.received[-1].verified
    detail = staff.get(reverse("admin:events_endpointdelivery_change", args=[delivery.pk])).content.decode()
    assert "payment.created" in detail and "200" in detail
