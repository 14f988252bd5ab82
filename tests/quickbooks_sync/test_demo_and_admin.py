"""``make run``'s demo syncs the README's webhook to the local fake QuickBooks; staff see the
connection's health and failed syncs in admin and can retry them."""

from __future__ import annotations

import pytest

from demo.seed import demo_seed
from fakes.app import build_fakes
from fakes.quickbooks import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REALM
from fakes.server import serve_in_thread
from payments.models import AuditLog
from quickbooks_sync import services
from quickbooks_sync.models import QboConnection, QboPaymentSync, SyncStatus
from tests.conftest import post_webhook, process_pending, sign, surepay_body
from tests.quickbooks_sync.conftest import ready_payment

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_fakes(settings, tmp_path, monkeypatch):
    """What ``make run`` starts: every fake on one port, settings as in development."""
    fakes = build_fakes()
    server = serve_in_thread(fakes)
    base = server.base_url
    settings.BASE_DIR = tmp_path
    settings.APP_ENV = "development"
    settings.FAKES_BASE_URL = base
    settings.SCHOOL_API_BASE_URL, settings.SCHOOL_API_TOKEN = f"{base}/directory", "demo-directory-token"
    settings.QBO_CLIENT_ID, settings.QBO_CLIENT_SECRET = DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
    settings.QBO_API_BASE_URL = f"{base}/qbo/v3"
    settings.QBO_OAUTH_DISCOVERY_URL = f"{base}/qbo/.well-known/openid_configuration"
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    yield dict(fakes.mounts)["/qbo"]
    server.stop()


def test_the_readme_webhook_lands_in_the_demo_books(client, demo_fakes):
    demo_seed()
    demo_seed()  # make run again: still one connection, reset to the fake's fresh token
    connection = QboConnection.objects.get()
    assert (connection.school.code, connection.realm_id, connection.can_sync) == ("ng", DEMO_REALM, True)

    body = surepay_body()  # the README's cURL payload
    assert post_webhook(client, body, signature=sign(body), provider="SUREPAY").status_code == 202
    process_pending()
    services.qbo_school_sync(school_id=connection.school_id)

    record = QboPaymentSync.objects.get()
    assert (record.status, record.txn_type) == (SyncStatus.SYNCED, "Payment")
    assert record.details["applied"] == [
        {"invoice_id": "82", "doc_number": "1001", "amount": "60000"},
        {"invoice_id": "83", "doc_number": "1002", "amount": "40000"},
    ]
    (stored,) = demo_fakes.objects(DEMO_REALM, "Payment")
    assert stored["CustomerRef"] == {"value": "80"}  # Amina Nakato (STU-0001) in the demo books
    connection.refresh_from_db()
    assert connection.token_version == 3  # two seeds, then the first sync's refresh
    assert demo_fakes.current_refresh_tokens(DEMO_REALM) == [connection.refresh_token]


class TestAdmin:
    def test_the_overview_shows_each_school_with_its_health_and_buttons(
        self, admin_client, account, student, connection, fake_qbo
    ):
        failed = ready_payment(account, student, currency="USD")
        services.qbo_sync_request(payment_id=failed.pk)
        services.qbo_school_sync(school_id=connection.school_id)
        page = admin_client.get("/admin/quickbooks_sync/qboconnection/")
        assert page.status_code == 200
        html = page.content.decode()
        assert "Nile Gardens School" in html and "Connected" in html and "Company Nile Gardens Books" in html
        assert "Item: School fees" in html and "Deposit to: Checking" in html
        assert "failed 1</strong>" in html
        assert "Last error: The payment is in USD but the QuickBooks company&#x27;s home currency is UGX" in html
        for action in ("/qbo/ng/setup/", "/qbo/ng/sync/", "/qbo/ng/disconnect/"):
            assert action in html
        assert "QuickBooks authorization lost" not in html  # no banner while connected

    def test_a_school_without_a_connection_offers_connect(self, admin_client, school):
        html = admin_client.get("/admin/quickbooks_sync/qboconnection/").content.decode()
        assert "Not connected" in html and 'action="/qbo/ng/connect/"' in html and "Connect to QuickBooks" in html

    def test_failed_syncs_show_intuits_message_and_can_be_retried(
        self, admin_client, account, student, connection, fake_qbo
    ):
        fake_qbo.companies["4620816365272861"].table("Item")["1"]["Active"] = False
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=connection.school_id)
        record = QboPaymentSync.objects.get()
        listing = admin_client.get("/admin/quickbooks_sync/qbopaymentsync/?status__exact=failed").content.decode()
        assert "Invalid Reference Id" in listing
        detail = admin_client.get(f"/admin/quickbooks_sync/qbopaymentsync/{record.pk}/change/").content.decode()
        assert "(QuickBooks error 2500)" in detail

        fake_qbo.companies["4620816365272861"].table("Item")["1"]["Active"] = True
        response = admin_client.post(
            "/admin/quickbooks_sync/qbopaymentsync/", {"action": "retry_sync", "_selected_action": [record.pk]}
        )
        assert response.status_code == 302
        record.refresh_from_db()
        assert record.status == SyncStatus.PENDING
        assert AuditLog.objects.get(action="qbo.sync_retry").actor == "admin"
        services.qbo_school_sync(school_id=connection.school_id)
        record.refresh_from_db()
        assert record.status == SyncStatus.SYNCED

    def test_sync_now_resumes_and_wakes(
        self, admin_client, account, student, connection, fake_qbo, django_capture_on_commit_callbacks
    ):
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        QboPaymentSync.objects.update(status=SyncStatus.PAUSED)
        with django_capture_on_commit_callbacks() as callbacks:
            response = admin_client.post("/qbo/ng/sync/")
        assert response.status_code == 302
        assert len(callbacks) == 1
        assert QboPaymentSync.objects.get().status == SyncStatus.PENDING

    def test_tokens_are_never_shown(self, admin_client, connection):
        html = admin_client.get(f"/admin/quickbooks_sync/qboconnection/{connection.pk}/change/").content.decode()
        assert connection.realm_id in html
        assert connection.access_token not in html and connection.refresh_token not in html
