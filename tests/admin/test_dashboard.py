"""The dashboard: today's takings by provider and currency and the work queues, over the staff
member's schools only, each number a link to a list showing exactly those rows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from payments.models import MappingStatus, Payment, RefundRequest, WebhookEvent
from tests.factories import AccountFactory, PaymentFactory, PaymentSyncFactory, report


@pytest.fixture
def day(world):
    """School A's day: takings from two providers, one payment of yesterday, and a queue each."""
    school = world[0].school
    surepay = world[0].rows["provideraccount"]
    dummy = AccountFactory(school=school, provider="dummy")
    PaymentFactory(account=surepay, status="succeeded", amount_minor=250_000)
    PaymentFactory(account=dummy, status="succeeded", amount_minor=70_000)
    yesterday = PaymentFactory(account=surepay, status="succeeded", amount_minor=999_000)
    a_day_ago = timezone.now() - timedelta(days=1, hours=1)
    Payment.objects.filter(pk=yesterday.pk).update(status_changed_at=a_day_ago, settled_at=a_day_ago)
    PaymentFactory(account=surepay, status="failed", mapping_status=MappingStatus.UNMATCHED)
    PaymentFactory(account=surepay, status="pending", mapping_status=MappingStatus.FAILED)
    PaymentFactory(account=surepay, status="awaiting_review", method="bank_transfer")
    PaymentSyncFactory(payment__account=surepay, status="pending")
    PaymentSyncFactory(payment__account=surepay, status="paused")
    WebhookEvent.objects.create(account=surepay, external_event_id=None, status="rejected", body_sha256="x" * 64)
    PaymentFactory(account=surepay, status="failed", risk_score=80, risk_flagged=True, risk_held=True)
    return world


def test_the_dashboard_counts_only_the_staff_members_school(client_a, day):
    response = client_a.get(reverse("admin-dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    takings = html[html.index('id="takings"') : html.index('id="queues"')]
    rows = re.findall(
        r'<tr data-provider="\w+"><td><a href="[^"]+">([^<]+)</a></td><td>(\w+)</td><td>(\d+)</td><td class="amount">([^<]+)</td></tr>',
        takings,
    )
    # Providers by their names. SurePay: 100,000 (the world's seed) + 250,000 + two synced-state
    # payments of 100,000 each.
    assert rows == [("Dummy (development)", "UGX", "1", "UGX 70,000"), ("SurePay", "UGX", "4", "UGX 550,000")]
    assert "KES" not in takings  # school B's payments are in KES


def queue_counts(html: str) -> dict[str, tuple[int, str]]:
    queues = html[html.index('id="queues"') :]
    return {
        label: (int(count), url.replace("&amp;", "&"))
        for url, label, count in re.findall(r'<a href="([^"]+)">([^<]+)</a></td><td[^>]*><strong>(\d+)</strong>', queues)
    }


def test_every_number_is_a_link_to_exactly_those_rows(client_a, day):
    html = client_a.get(reverse("admin-dashboard")).content.decode()
    queues = queue_counts(html)
    assert {label.split(" (")[0]: count for label, (count, _) in queues.items()} == {
        "Unmatched payments": 1,
        "Payments whose student look-up failed": 1,
        "Manual payments awaiting review": 1,
        "Payments waiting to reach QuickBooks": 2,
        "Payments whose QuickBooks sync failed": 1,  # the world's seed payment
        "Webhook dead letters": 1,
        "Webhook events that failed processing": 1,  # the world's seed event
        "Payments with reports that disagree": 0,
        "Payments the provider could not be asked about": 0,
        "High-risk payments to look at": 1,
        "High-risk payments held from QuickBooks until cleared": 1,
        "Payments under dispute": 0,
        "Refunds and disputes waiting for their payment": 0,
        "Staff refunds whose provider answer was lost": 0,
        "Outbound webhook deliveries that failed every retry": 1,  # the world's seed delivery
        "Outbound webhook endpoints disabled": 0,
    }
    for label, (count, url) in queues.items():
        response = client_a.get(url)
        assert response.status_code == 200, label
        assert response.context["cl"].result_count == count, label

    takings_links = re.findall(r'<tr data-provider="(\w+)"><td><a href="([^"]+)">[^<]+</a></td><td>UGX</td><td>(\d+)</td>', html)
    assert len(takings_links) == 2
    for provider, url, count in takings_links:
        result = client_a.get(url.replace("&amp;", "&")).context["cl"]
        assert result.result_count == int(count), provider
        assert {payment.provider for payment in result.result_list} == {provider}


def test_what_the_ledger_needs_staff_for_is_counted_and_linked(client_a, world):
    surepay = world[0].rows["provideraccount"]
    disputed = PaymentFactory(account=surepay, status="succeeded")
    report(disputed, disputes=[("dp_1", 100_000, "open")])
    conflicted = PaymentFactory(account=surepay, status="succeeded")
    report(conflicted, refunds=[("re_1", 80_000), ("re_2", 80_000)])  # more than was paid
    PaymentFactory(account=surepay, status="processing", review_flag="status_unknown")
    waiting = PaymentFactory.build(account=surepay, external_txn_id="not-yet")
    report(waiting, refunds=[("re_9", 5_000)])  # a refund whose payment has not arrived
    RefundRequest.objects.create(
        school=disputed.school, payment=disputed, method="provider", amount_minor=1_000, currency="UGX",
        reason="x", idempotency_key="refund-lost", status="in_doubt", error="Stripe timed out",
    )  # fmt: skip
    queues = queue_counts(client_a.get(reverse("admin-dashboard")).content.decode())
    counts = {label.split(" (")[0]: count for label, (count, _) in queues.items()}
    assert [counts[label] for label in (
        "Payments with reports that disagree", "Payments the provider could not be asked about",
        "Payments under dispute", "Refunds and disputes waiting for their payment",
        "Staff refunds whose provider answer was lost",
    )] == [1, 1, 1, 1, 1]  # fmt: skip
    for label, (count, url) in queues.items():
        assert client_a.get(url).context["cl"].result_count == count, label


def test_the_admin_index_links_the_dashboard(client_a):
    html = client_a.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin-dashboard")}"' in html


def test_the_dashboard_needs_a_staff_login(client, db):
    response = client.get(reverse("admin-dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
