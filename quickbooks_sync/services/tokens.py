"""Talking to QuickBooks: a session per school with fresh OAuth tokens; refreshing, storing and
losing tokens; keeping refresh tokens alive."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from intuitlib.exceptions import AuthClientError
from quickbooks import exceptions as qb_exceptions
from quickbooks.batch import batch_create

from payments.audit import audit_record
from payments.models import AuditLog
from quickbooks_sync import locks
from quickbooks_sync.client import QboClient, auth_client_build, body_json, fault_from, oauth_error, qbo_client_build
from quickbooks_sync.coordination import Lock, coordinator
from quickbooks_sync.errors import (
    QboAuthLost,
    QboError,
    QboThrottled,
    QboUnavailable,
)
from quickbooks_sync.models import QboConnection
from quickbooks_sync.services.lane import ACTOR, _pause_reason, _school_pause

logger = logging.getLogger(__name__)


_clients = threading.local()


class QboSession:
    """One connection's client for the length of a run: refreshes the access token before it
    expires and maps the library's faults onto ``quickbooks_sync.errors``."""

    def __init__(self, connection: QboConnection, lane: Lock | None = None) -> None:
        self.connection = connection
        self.lane = lane

    def client(self) -> QboClient:
        if _expiring(self.connection):
            self.connection = qbo_tokens_refresh(connection_id=self.connection.pk)
        key = (
            self.connection.pk,
            self.connection.access_token,
            settings.QBO_API_BASE_URL,
            settings.QBO_OAUTH_DISCOVERY_URL,
        )
        cache = getattr(_clients, "by_connection", None)
        if cache is None or cache[0] != key:
            # A client per token version and thread: the discovery document is read once.
            cache = (
                key,
                qbo_client_build(
                    realm_id=self.connection.realm_id,
                    access_token=self.connection.access_token,
                    refresh_token=self.connection.refresh_token,
                ),
            )
            _clients.by_connection = cache
        return cache[1]

    def refresh_after_401(self) -> None:
        self.connection = qbo_tokens_refresh(
            connection_id=self.connection.pk, stale_version=self.connection.token_version
        )

    def _call(self, operation):
        client = self.client()
        try:
            return operation(client)
        except qb_exceptions.QuickbooksException as exc:
            error = fault_from(exc, intuit_tid=client.last_intuit_tid)
            if isinstance(error, QboThrottled):
                # A throttle fault that did not come as HTTP 429 (docs/reference/quickbooks.md §4.2):
                # pause all the same.
                coordinator().pause(self.connection.realm_id, error.retry_after)
            raise error from exc

    def query(self, select: str) -> dict[str, Any]:
        return self._call(lambda qb: qb.query(select)).get("QueryResponse", {})

    def create(self, entity: str, body: dict, request_id: str) -> dict:
        return self._call(lambda qb: qb.create_object(entity, body_json(body), request_id=request_id))[entity]

    def read(self, entity: str, object_id: str) -> dict:
        return self._call(lambda qb: qb.get_single_object(entity, object_id))[entity]

    def batch(self, body: dict, request_id: str) -> list[dict]:
        """One batch call: each item's answer, a document or a ``Fault`` (an item's fault does
        not raise; an error of the call does)."""
        return self._call(
            lambda qb: qb.post(f"{qb.api_url}/company/{qb.company_id}/batch", body_json(body), request_id=request_id)
        ).get("BatchItemResponse", [])

    def batch_create(self, objects: list):
        return self._call(lambda qb: batch_create(objects, qb=qb))


def _expiring(connection: QboConnection) -> bool:
    margin = timedelta(seconds=settings.QBO_TOKEN_REFRESH_MARGIN_SECONDS)
    expires = connection.access_token_expires_at
    return not connection.access_token or expires is None or expires <= timezone.now() + margin


def qbo_tokens_refresh(*, connection_id: int, stale_version: int | None = None) -> QboConnection:
    """Refresh the connection's tokens if they expire soon (or, with ``stale_version``, if the
    stored tokens are still that version, e.g. after a 401), and persist the rotated refresh
    token.

    docs/reference/quickbooks.md §1.5: every refresh may return a new refresh token and only the newest keeps
    working. Refreshes of one connection are serialized by a Redis lock (never a database lock
    across the network call); the result is stored under the row lock only if nobody stored
    newer tokens meanwhile (``token_version``), so the newest refresh token is never lost.
    Raises ``QboAuthLost`` when Intuit refuses the refresh token, ``QboUnavailable`` when it
    cannot be asked now."""
    timeout = settings.QBO_CONNECT_TIMEOUT_SECONDS + settings.QBO_READ_TIMEOUT_SECONDS
    lock = coordinator().lock(f"refresh:{connection_id}", ttl=3 * timeout + 10, wait=3 * timeout + 10)
    if lock is None:
        raise QboUnavailable("another worker is still refreshing this connection's tokens", outcome_unknown=False)
    try:
        connection = QboConnection.objects.select_related("school").get(pk=connection_id)
        if connection.status != QboConnection.Status.CONNECTED or not connection.refresh_token:
            raise QboAuthLost(_pause_reason(connection))
        if stale_version is None and not _expiring(connection):
            return connection  # fresh enough (perhaps refreshed by whoever held the lock)
        if stale_version is not None and connection.token_version != stale_version:
            return connection  # someone else already replaced the tokens we were refused with
        used_version, used_token = connection.token_version, connection.refresh_token
        auth = auth_client_build(refresh_token=used_token, realm_id=connection.realm_id)
        try:
            auth.refresh(refresh_token=used_token)
        except AuthClientError as exc:
            if exc.status_code in (400, 401):
                current = QboConnection.objects.select_related("school").get(pk=connection_id)
                if current.token_version != used_version:
                    return current  # our token was replaced while we asked (a lock that expired)
                error = oauth_error(exc)
                logger.warning("Intuit refused the refresh token of school %s: %s", connection.school.code, error)
                qbo_connection_authorization_lost(
                    connection_id=connection_id,
                    reason=f"Intuit refused the refresh token ({error})",
                    token_version=used_version,
                )
                raise QboAuthLost(f"Intuit refused the refresh token ({error})") from exc
            raise QboUnavailable(
                f"Intuit's token endpoint answered HTTP {exc.status_code}", outcome_unknown=False
            ) from exc
        except requests.RequestException as exc:
            raise QboUnavailable(
                f"Intuit's token endpoint could not be reached ({type(exc).__name__})", outcome_unknown=False
            ) from exc
        return _tokens_store(connection_id=connection_id, expected_version=used_version, auth=auth)
    finally:
        lock.release()


def _tokens_store(*, connection_id: int, expected_version: int, auth) -> QboConnection:
    now = timezone.now()
    with transaction.atomic():
        connection = locks.connection(connection_id)
        if connection.token_version != expected_version:
            logger.warning(
                "school %s: newer tokens were stored meanwhile; this refresh's are dropped", connection.school.code
            )
            return connection
        connection.access_token = auth.access_token
        connection.refresh_token = auth.refresh_token
        connection.access_token_expires_at = now + timedelta(seconds=int(auth.expires_in or 3600))
        if getattr(auth, "x_refresh_token_expires_in", None):
            connection.refresh_token_expires_at = now + timedelta(seconds=int(auth.x_refresh_token_expires_in))
        connection.token_version += 1
        connection.tokens_refreshed_at = now
        connection.save(
            update_fields=[
                "access_token", "refresh_token", "access_token_expires_at", "refresh_token_expires_at",
                "token_version", "tokens_refreshed_at", "updated_at",
            ]
        )  # fmt: skip
    return connection


def qbo_connection_authorization_lost(*, connection_id: int, reason: str, token_version: int | None = None) -> None:
    """The authorization is gone: the school's sync pauses (no retries burned) and staff see a
    reconnect banner. Ignored if newer tokens were stored since ``token_version``."""
    with transaction.atomic():
        connection = locks.connection(connection_id)
        if token_version is not None and connection.token_version != token_version:
            return
        if connection.status != QboConnection.Status.CONNECTED:
            return
        connection.status = QboConnection.Status.NEEDS_RECONNECT
        connection.status_reason = reason[:500]
        connection.save(update_fields=["status", "status_reason", "updated_at"])
        audit_record(
            action="qbo.authorization_lost",
            actor_type=AuditLog.ActorType.SYSTEM,
            actor=ACTOR,
            school_id=connection.school_id,
            target=connection,
            details={"reason": reason[:500], "realm_id": connection.realm_id},
        )
        _school_pause(school_id=connection.school_id, reason=_pause_reason(connection))


def qbo_tokens_keepalive() -> int:
    """Hourly: refresh tokens not refreshed for a day, so an idle school's refresh token keeps
    rolling (it expires after 100 days unused, docs/reference/quickbooks.md §1.5)."""
    refreshed = 0
    stale = timezone.now() - timedelta(days=1)
    for connection in QboConnection.objects.filter(status=QboConnection.Status.CONNECTED):
        if connection.tokens_refreshed_at and connection.tokens_refreshed_at > stale:
            continue
        try:
            qbo_tokens_refresh(connection_id=connection.pk, stale_version=connection.token_version)
            refreshed += 1
        except QboError as exc:
            logger.warning("token keep-alive for school %s: %s", connection.school_id, exc)
    return refreshed
