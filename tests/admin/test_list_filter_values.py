"""The payment list's filters by every value present (currency, provider) read those values once
every few minutes per scope, not on every page: at a million payments each read costs 100 ms."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import AccountFactory, PaymentFactory

LIST = "admin:payments_payment_changelist"


def distinct_reads(client) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(LIST))
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in captured if 'SELECT DISTINCT "payments_payment"' in q["sql"]]


def test_the_filter_values_are_read_once_and_stay_those_of_the_users_schools(client_a, world):
    PaymentFactory(account=AccountFactory(school=world[0].school, provider="stripe"), currency="USD")
    html, reads = distinct_reads(client_a)
    assert len(reads) == 2  # currencies, providers
    assert "USD" in html and "Stripe" in html
    assert "KES" not in html  # the other school's currency is not offered
    html, reads = distinct_reads(client_a)
    assert reads == [] and "USD" in html and "Stripe" in html
