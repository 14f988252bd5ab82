"""Staff connect a school in admin: intuit-oauth's authorization flow against the fake Intuit
(state checked against the session), tokens stored encrypted, item and account chosen from the
company, "Disconnect" revokes; reconnecting drains the backlog."""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from django.db import connection as db
from django.utils import timezone

from payments.models import AuditLog
from quickbooks_sync import services
from quickbooks_sync.models import QboConnection, QboPaymentSync, SyncStatus
from tests.quickbooks_sync.conftest import CLIENT_ID, REALM, ready_payment

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/quickbooks_sync/qboconnection/"


def start_connect(client, school_code="ng"):
    response = client.post(f"/qbo/{school_code}/connect/")
    assert response.status_code == 302
    return response["Location"]


def consent(authorize_url: str) -> str:
    """The staff member signs in at Intuit and grants access; the fake consents at once and
    sends the browser back to our callback."""
    answer = httpx.get(authorize_url)
    assert answer.status_code == 302
    back = answer.headers["location"]
    assert back.startswith("http://testserver/qbo/callback/?")
    return back.removeprefix("http://testserver")


def connect(client, school_code="ng"):
    return client.get(consent(start_connect(client, school_code)))


class TestConnect:
    def test_connect_stores_the_company_and_encrypted_tokens_then_asks_for_the_settings(
        self, admin_client, school, fake_qbo, caplog
    ):
        caplog.set_level(logging.DEBUG)
        authorize_url = start_connect(admin_client)
        assert authorize_url.startswith(f"{fake_qbo.base_url}/connect/oauth2?")
        query = parse_qs(urlparse(authorize_url).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["response_type"] == ["code"]
        assert query["scope"] == ["com.intuit.quickbooks.accounting"]
        assert query["redirect_uri"] == ["http://testserver/qbo/callback/"]
        assert query["state"] == [admin_client.session["qbo_oauth"]["state"]]

        response = admin_client.get(consent(authorize_url))
        assert (response.status_code, response["Location"]) == (302, "/qbo/ng/setup/")
        assert "qbo_oauth" not in admin_client.session  # a state is good for one callback only

        connection = QboConnection.objects.get(school=school)
        assert (connection.status, connection.realm_id, connection.company_name) == (
            "connected",
            REALM,
            "Nile Gardens Books",
        )
        assert (connection.home_currency, connection.multicurrency, connection.is_configured) == ("UGX", False, False)
        assert connection.refresh_token in fake_qbo.current_refresh_tokens(REALM)
        assert connection.access_token_expires_at > timezone.now() + timedelta(minutes=55)
        assert connection.refresh_token_expires_at > timezone.now() + timedelta(days=99)
        exchange = [r for r in fake_qbo.requests if r.path == "/oauth2/v1/tokens/bearer"][0]
        form = parse_qs(exchange.body.decode())
        assert form["grant_type"] == ["authorization_code"]
        assert form["redirect_uri"] == ["http://testserver/qbo/callback/"]
        assert exchange.headers["Authorization"].startswith("Basic ")
        with db.cursor() as cursor:
            cursor.execute("SELECT access_token, refresh_token FROM quickbooks_sync_qboconnection")
            raw_access, raw_refresh = cursor.fetchone()
        assert raw_access.startswith("gAAAA") and raw_refresh.startswith("gAAAA")  # Fernet tokens
        assert connection.access_token not in raw_access and connection.refresh_token not in raw_refresh
        audit = AuditLog.objects.get(action="qbo.connected")
        assert (audit.actor, audit.details["realm_id"], audit.details["reconnect"]) == ("admin", REALM, False)
        assert connection.access_token not in str(audit.details)

        page = admin_client.get("/qbo/ng/setup/")
        assert page.status_code == 200
        html = page.content.decode()
        assert '<option value="1">School fees</option>' in html
        assert '<option value="35">Checking (Bank)</option>' in html
        assert '<option value="4">Undeposited Funds (Other Current Asset)</option>' in html
        assert "Tuition income" not in html  # an income account is no place to deposit money
        saved = admin_client.post("/qbo/ng/setup/", {"item_id": "1", "deposit_account_id": "35"})
        assert (saved.status_code, saved["Location"]) == (302, OVERVIEW)
        connection.refresh_from_db()
        assert (connection.item_name, connection.deposit_account_name, connection.can_sync) == (
            "School fees",
            "Checking (Bank)",
            True,
        )
        assert AuditLog.objects.filter(action="qbo.configured").exists()

        # Neither token ever reached a log record (requests-oauthlib logs them at DEBUG).
        assert connection.access_token not in caplog.text and connection.refresh_token not in caplog.text

    def test_a_callback_with_a_foreign_state_is_refused_and_nothing_is_stored(self, admin_client, school, fake_qbo):
        back = consent(start_connect(admin_client))
        forged = back.replace("state=", "state=x")
        response = admin_client.get(forged)
        assert response.status_code == 400
        assert "was not started from this session" in response.content.decode()
        assert not QboConnection.objects.exists()
        # And the state is gone: the real callback cannot be replayed either.
        assert admin_client.get(back).status_code == 400

    def test_a_callback_without_a_started_flow_is_refused(self, admin_client, school, fake_qbo):
        response = admin_client.get(f"/qbo/callback/?code=abc&state=def&realmId={REALM}")
        assert response.status_code == 400
        assert not QboConnection.objects.exists()

    def test_declined_consent_stores_nothing(self, admin_client, school, fake_qbo):
        fake_qbo.decline_next_consent = True
        response = connect(admin_client)
        assert (response.status_code, response["Location"]) == (302, OVERVIEW)
        assert not QboConnection.objects.exists()
        messages = [str(m) for m in response.wsgi_request._messages]
        assert messages == ["QuickBooks access was not granted for Nile Gardens School (access_denied)."]

    def test_staff_without_permission_cannot_connect(self, client, school, fake_qbo, django_user_model):
        user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
        client.force_login(user)
        assert client.post("/qbo/ng/connect/").status_code == 403
        anonymous = type(client)()
        assert anonymous.post("/qbo/ng/connect/").status_code == 302  # to the admin login

    def test_without_app_keys_staff_are_told(self, admin_client, school, fake_qbo, settings):
        settings.QBO_CLIENT_ID = ""
        response = admin_client.post("/qbo/ng/connect/")
        assert (response.status_code, response["Location"]) == (302, OVERVIEW)
        messages = [str(m) for m in response.wsgi_request._messages]
        assert messages == [
            "Cannot connect to QuickBooks: QuickBooks is not configured: set QBO_CLIENT_ID and QBO_CLIENT_SECRET"
        ]


class TestDisconnect:
    def test_disconnect_revokes_at_intuit_and_pauses_the_school(
        self, admin_client, account, student, connection, fake_qbo
    ):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        refresh_token = connection.refresh_token
        response = admin_client.post("/qbo/ng/disconnect/")
        assert (response.status_code, response["Location"]) == (302, OVERVIEW)
        (revoke,) = [r for r in fake_qbo.requests if r.path == "/oauth2/v1/tokens/revoke"]
        assert revoke.json() == {"token": refresh_token}
        assert fake_qbo.current_refresh_tokens(REALM) == []
        connection.refresh_from_db()
        assert (connection.status, connection.access_token, connection.refresh_token) == ("disconnected", "", "")
        record = QboPaymentSync.objects.get()
        assert (record.status, record.last_error) == (
            SyncStatus.PAUSED,
            "QuickBooks is disconnected: connect to resume.",
        )
        assert AuditLog.objects.get(action="qbo.disconnected").actor == "admin"

    def test_reconnecting_drains_the_backlog(self, admin_client, account, student, connection, fake_qbo):
        payments = [ready_payment(account, student, 10_000 * (i + 1)) for i in range(3)]
        services.qbo_connection_authorization_lost(
            connection_id=connection.pk, reason="Intuit refused the refresh token (invalid_grant)"
        )
        for payment in payments:
            assert services.qbo_sync_request(payment_id=payment.pk) == SyncStatus.PAUSED
        assert fake_qbo.api_requests(REALM) == []

        response = connect(admin_client)
        assert (response.status_code, response["Location"]) == (302, OVERVIEW)  # configured already
        connection.refresh_from_db()
        assert connection.status == "connected"
        assert AuditLog.objects.get(action="qbo.connected").details["reconnect"] is True
        assert set(QboPaymentSync.objects.values_list("status", flat=True)) == {SyncStatus.PENDING}
        services.qbo_school_sync(school_id=connection.school_id)
        assert set(QboPaymentSync.objects.values_list("status", "attempts")) == {(SyncStatus.SYNCED, 1)}
        assert sorted(r["TotalAmt"] for r in fake_qbo.objects(REALM, "SalesReceipt")) == [10_000, 20_000, 30_000]
