"""Fixtures of the QuickBooks tests: the fake QuickBooks on a real socket, a connected school,
ready payments. ``intuit-oauth`` and ``python-quickbooks`` run unpatched against the fake."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from core.status import PaymentStatus
from fakes.quickbooks import FakeQuickBooks
from fakes.server import serve_in_thread
from payments.models import MappingStatus
from quickbooks_sync.models import QboConnection
from tests.factories import PaymentFactory, StudentFactory

REALM = "4620816365272861"
CLIENT_ID = "test-qbo-client"
CLIENT_SECRET = "test-qbo-secret"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # admin_client's superuser and the demo login hash a password; PBKDF2's million rounds cost
    # more than most of these tests. Nothing here is about passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def fake_qbo(settings, monkeypatch):
    fake = FakeQuickBooks(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    fake.add_company(REALM, name="Nile Gardens Books", home_currency="UGX")
    server = serve_in_thread(fake)
    fake.base_url = server.base_url
    settings.QBO_CLIENT_ID = CLIENT_ID
    settings.QBO_CLIENT_SECRET = CLIENT_SECRET
    settings.QBO_API_BASE_URL = f"{server.base_url}/v3"
    settings.QBO_OAUTH_DISCOVERY_URL = f"{server.base_url}/.well-known/openid_configuration"
    settings.QBO_REDIRECT_URI = "http://testserver/qbo/callback/"
    settings.QBO_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.QBO_READ_TIMEOUT_SECONDS = 2.0
    # Parallel sends run in threads with their own database connections, which cannot see a
    # test's uncommitted rows: tests of that path use transactional_db and set it themselves.
    settings.QBO_SYNC_CONCURRENCY = 1
    # docs/reference/quickbooks.md §6.2: python-quickbooks' OAuth2Session needs this for a plain-http fake.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    yield fake
    server.stop()


@pytest.fixture
def connection(school, fake_qbo):
    access, refresh = fake_qbo.issue_tokens(REALM)
    return QboConnection.objects.create(
        school=school,
        realm_id=REALM,
        company_name="Nile Gardens Books",
        status=QboConnection.Status.CONNECTED,
        access_token=access,
        access_token_expires_at=timezone.now() + timedelta(hours=1),
        refresh_token=refresh,
        refresh_token_expires_at=timezone.now() + timedelta(days=100),
        tokens_refreshed_at=timezone.now(),
        item_id="1",
        item_name="School fees",
        deposit_account_id="35",
        deposit_account_name="Checking",
        home_currency="UGX",
        sync_since=datetime(2000, 1, 1, tzinfo=dt_timezone.utc),
    )


@pytest.fixture
def student(school):
    return StudentFactory(school=school, student_number="STU-0001", full_name="Amina Nakato")


def ready_payment(account, student, amount_minor=100_000, **fields):
    """A payment the sync should pick up: succeeded and mapped to ``student``."""
    values = {
        "status": PaymentStatus.SUCCEEDED,
        "mapping_status": MappingStatus.MAPPED,
        "student": student,
        "amount_minor": amount_minor,
        "currency": account.school.currency,
    }
    values.update(fields)
    return PaymentFactory(account=account, **values)


def customer_for(fake: FakeQuickBooks, display_name: str) -> dict:
    return fake.add_customer(REALM, display_name)
