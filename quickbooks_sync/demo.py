"""``make run``'s demo: the demo school is connected to the local fake QuickBooks company
(``fakes.quickbooks.build_demo_quickbooks``), so the README's webhook ends up in QuickBooks.

The fake starts afresh with every ``make run``, knowing one refresh token; the connection is
reset to it each time (an expired access token, so the first sync refreshes and stores the
rotated token, as in production)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from fakes.quickbooks import DEMO_REALM, DEMO_REFRESH_TOKEN
from payments.models import School
from quickbooks_sync.models import QboConnection


def qbo_demo_seed(*, school: School) -> QboConnection | None:
    if settings.APP_ENV != "development" or not settings.QBO_API_BASE_URL.startswith(settings.FAKES_BASE_URL):
        return None  # only ever against the local fake
    connection = QboConnection.objects.filter(school=school).first() or QboConnection(school=school)
    connection.realm_id = DEMO_REALM
    connection.company_name = "Nile Gardens School (demo books)"
    connection.status = QboConnection.Status.CONNECTED
    connection.status_reason = ""
    connection.access_token = ""
    connection.access_token_expires_at = None
    connection.refresh_token = DEMO_REFRESH_TOKEN
    connection.refresh_token_expires_at = timezone.now() + timedelta(days=100)
    connection.token_version += 1
    connection.item_id, connection.item_name = "1", "School fees"
    connection.deposit_account_id, connection.deposit_account_name = "35", "Checking (Bank)"
    connection.home_currency, connection.multicurrency = "UGX", False
    connection.connected_by = connection.connected_by or "demo"
    connection.connected_at = connection.connected_at or timezone.now()
    connection.save()
    return connection
