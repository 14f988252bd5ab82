"""Tokens: refreshed before they expire, the rotated refresh token persisted under a row lock
(two workers refreshing at once never lose the newest one), and an authorization that is gone
pauses the school instead of burning retries."""

from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.db import connections
from django.utils import timezone

from payments.models import AuditLog
from quickbooks_sync import services
from quickbooks_sync.errors import QboAuthLost
from quickbooks_sync.models import QboConnection, QboPaymentSync, SyncStatus
from tests.quickbooks_sync.conftest import REALM, ready_payment


def refreshes(fake):
    return [r for r in fake.requests if r.path == "/oauth2/v1/tokens/bearer" and b"grant_type=refresh_token" in r.body]


@pytest.mark.django_db
class TestRefresh:
    def test_a_token_about_to_expire_is_refreshed_before_the_first_call(self, account, student, connection, fake_qbo):
        old_access, old_refresh = connection.access_token, connection.refresh_token
        QboConnection.objects.filter(pk=connection.pk).update(
            access_token_expires_at=timezone.now() + timedelta(seconds=60)
        )
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        services.qbo_school_sync(school_id=payment.school_id)

        (refresh,) = refreshes(fake_qbo)
        assert parse_qs(refresh.body.decode())["refresh_token"] == [old_refresh]
        connection.refresh_from_db()
        assert connection.token_version == 1
        assert connection.access_token != old_access
        assert fake_qbo.current_refresh_tokens(REALM) == [connection.refresh_token]
        assert connection.access_token_expires_at > timezone.now() + timedelta(minutes=55)
        first_call = fake_qbo.api_requests(REALM)[0]
        assert first_call.headers["Authorization"] == f"Bearer {connection.access_token}"
        assert QboPaymentSync.objects.get().status == SyncStatus.SYNCED

    def test_a_401_refreshes_once_and_the_sync_goes_on_without_spending_an_attempt(
        self, account, student, connection, fake_qbo
    ):
        fake_qbo.expire_access_tokens()  # our copy still looks valid for an hour
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        assert services.qbo_school_sync(school_id=payment.school_id) == "idle"
        assert len(refreshes(fake_qbo)) == 1
        record = QboPaymentSync.objects.get()
        assert (record.status, record.attempts) == (SyncStatus.SYNCED, 1)

    def test_a_refused_refresh_pauses_the_school_and_shows_a_banner(
        self, admin_client, account, student, connection, fake_qbo
    ):
        fake_qbo.revoke_all()  # the user disconnected the app inside QuickBooks
        payments = [ready_payment(account, student) for _ in range(2)]
        for payment in payments:
            services.qbo_sync_request(payment_id=payment.pk)
        assert services.qbo_school_sync(school_id=connection.school_id) == "paused"

        connection.refresh_from_db()
        assert (connection.status, connection.status_reason) == (
            "needs_reconnect",
            "Intuit refused the refresh token (invalid_grant)",
        )
        records = list(QboPaymentSync.objects.values_list("status", "attempts", "next_attempt_at"))
        assert records == [(SyncStatus.PAUSED, 0, None)] * 2
        assert AuditLog.objects.get(action="qbo.authorization_lost").details["reason"] == connection.status_reason
        assert fake_qbo.objects(REALM, "SalesReceipt") == []
        # Nothing is retried while paused: a run does nothing at all.
        calls = len(fake_qbo.requests)
        assert services.qbo_school_sync(school_id=connection.school_id) == "paused"
        assert len(fake_qbo.requests) == calls

        page = admin_client.get("/admin/").content.decode()
        assert "QuickBooks authorization lost for Nile Gardens School." in page
        assert "2 payment syncs wait and will be sent once you reconnect." in page
        assert 'action="/qbo/ng/connect/"' in page and "Reconnect to QuickBooks" in page

    def test_the_keepalive_refreshes_tokens_older_than_a_day(self, connection, fake_qbo):
        QboConnection.objects.filter(pk=connection.pk).update(tokens_refreshed_at=timezone.now() - timedelta(days=2))
        assert services.qbo_tokens_keepalive() == 1
        assert services.qbo_tokens_keepalive() == 0
        connection.refresh_from_db()
        assert fake_qbo.current_refresh_tokens(REALM) == [connection.refresh_token]

    def test_a_refresh_stored_after_newer_tokens_is_dropped(self, connection, fake_qbo):
        """The compare-and-set under the row lock: a result computed from version 0 is not
        written over version 1."""

        class Tokens:
            access_token, refresh_token, expires_in, x_refresh_token_expires_in = "a-old", "r-old", 3600, 100

        QboConnection.objects.filter(pk=connection.pk).update(token_version=1)
        stored = services.tokens._tokens_store(connection_id=connection.pk, expected_version=0, auth=Tokens())
        assert stored.refresh_token == connection.refresh_token
        assert QboConnection.objects.get().refresh_token == connection.refresh_token


@pytest.mark.django_db(transaction=True)
class TestConcurrentRefresh:
    def run_concurrently(self, count, target):
        barrier = threading.Barrier(count)
        results, errors = [], []

        def worker():
            try:
                barrier.wait()
                results.append(target())
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        return results

    def test_two_workers_refused_with_the_same_token_refresh_once(self, connection, fake_qbo):
        fake_qbo.token_latency_seconds = 0.3  # a slow token endpoint widens the race
        results = self.run_concurrently(
            2, lambda: services.qbo_tokens_refresh(connection_id=connection.pk, stale_version=0).refresh_token
        )
        stored = QboConnection.objects.get()
        assert len(refreshes(fake_qbo)) == 1
        assert stored.token_version == 1
        assert results == [stored.refresh_token, stored.refresh_token]
        assert fake_qbo.current_refresh_tokens(REALM) == [stored.refresh_token]

    def test_two_workers_with_an_expiring_token_never_lose_the_newest_refresh_token(
        self, account, student, connection, fake_qbo
    ):
        fake_qbo.token_latency_seconds = 0.3
        QboConnection.objects.filter(pk=connection.pk).update(
            access_token_expires_at=timezone.now() - timedelta(seconds=1)
        )
        self.run_concurrently(2, lambda: services.qbo_tokens_refresh(connection_id=connection.pk))
        stored = QboConnection.objects.get()
        assert len(refreshes(fake_qbo)) == 1
        assert fake_qbo.current_refresh_tokens(REALM) == [stored.refresh_token]
        # The stored token still works: a sync after it refreshes (forced) and posts.
        payment = ready_payment(account, student)
        services.qbo_sync_request(payment_id=payment.pk)
        fake_qbo.expire_access_tokens()
        services.qbo_school_sync(school_id=payment.school_id)
        assert QboPaymentSync.objects.get().status == SyncStatus.SYNCED

    def test_refreshes_back_to_back_each_use_the_newest_token(self, connection, fake_qbo):
        """Forced one after the other (two 401s in a row): the second uses what the first
        stored, so the fake's strict rotation accepts both."""
        first = services.qbo_tokens_refresh(connection_id=connection.pk, stale_version=0)
        second = services.qbo_tokens_refresh(connection_id=connection.pk, stale_version=first.token_version)
        assert (first.token_version, second.token_version) == (1, 2)
        assert fake_qbo.current_refresh_tokens(REALM) == [second.refresh_token]
        with pytest.raises(QboAuthLost):
            fake_qbo.revoke_all()
            services.qbo_tokens_refresh(connection_id=connection.pk, stale_version=2)
