"""Connecting a school to QuickBooks, choosing its item and deposit account, disconnecting (staff)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.db import transaction
from django.utils import timezone
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError

from payments.audit import audit_record
from payments.models import AuditLog
from quickbooks_sync import locks
from quickbooks_sync.client import auth_client_build, oauth_error
from quickbooks_sync.errors import (
    QboError,
    QboFault,
    QboNotConfigured,
    QboUnavailable,
)
from quickbooks_sync.models import QboConnection
from quickbooks_sync.services.lane import _pause_reason, _school_pause, qbo_school_resume
from quickbooks_sync.services.tokens import QboSession

logger = logging.getLogger(__name__)


def qbo_authorization_url(*, state: str) -> str:
    """Where to send staff to grant access (docs/reference/quickbooks.md §1.3); ``state`` is checked on return."""
    return auth_client_build().get_authorization_url([Scopes.ACCOUNTING], state_token=state)


def qbo_connection_authorize(*, school_id: int, code: str, realm_id: str, actor: str) -> QboConnection:
    """Exchange the callback's code for tokens and store them (encrypted) with the company id.
    A reconnect resumes the paused backlog."""
    auth = auth_client_build(realm_id=realm_id)
    try:
        auth.get_bearer_token(code, realm_id=realm_id)
    except AuthClientError as exc:
        raise QboFault(f"Intuit refused the authorization ({oauth_error(exc)}); please connect again") from exc
    except requests.RequestException as exc:
        raise QboUnavailable(
            f"Intuit could not be reached ({type(exc).__name__}); please connect again", outcome_unknown=False
        ) from exc
    now = timezone.now()
    with transaction.atomic():
        connection, created = locks.connection_of_school_or_new(school_id)
        previous_realm = connection.realm_id
        realm_changed = bool(previous_realm) and previous_realm != realm_id
        connection.realm_id = realm_id
        connection.access_token = auth.access_token
        connection.refresh_token = auth.refresh_token
        connection.access_token_expires_at = now + timedelta(seconds=int(auth.expires_in or 3600))
        connection.refresh_token_expires_at = (
            now + timedelta(seconds=int(auth.x_refresh_token_expires_in)) if auth.x_refresh_token_expires_in else None
        )
        connection.token_version += 1
        connection.tokens_refreshed_at = now
        connection.status = QboConnection.Status.CONNECTED
        connection.status_reason = ""
        connection.connected_at = now
        connection.connected_by = actor[:150]
        if created or not previous_realm:
            connection.sync_since = now
        if realm_changed:
            # The item and account belong to the old company.
            connection.item_id = connection.item_name = connection.deposit_account_id = (
                connection.deposit_account_name
            ) = ""
            connection.home_currency, connection.company_name = "", ""
        connection.save()
        audit_record(
            action="qbo.connected",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={"realm_id": realm_id, "reconnect": bool(previous_realm), "previous_realm_id": previous_realm},
        )
    try:
        connection = qbo_company_refresh(connection_id=connection.pk)
    except QboError as exc:
        logger.warning("could not read the company settings of school %s: %s", school_id, exc)
    qbo_school_resume(school_id=school_id)
    return connection


def qbo_company_refresh(*, connection_id: int) -> QboConnection:
    """Read the company's name and currency settings (shown to staff; the currency check)."""
    session = QboSession(QboConnection.objects.select_related("school").get(pk=connection_id))
    preferences = session._call(lambda qb: qb.get(f"{qb.api_url}/company/{qb.company_id}/preferences"))["Preferences"]
    info = session.read("CompanyInfo", session.connection.realm_id)
    currency_prefs = preferences.get("CurrencyPrefs") or {}
    QboConnection.objects.filter(pk=connection_id).update(
        home_currency=str((currency_prefs.get("HomeCurrency") or {}).get("value", ""))[:3],
        multicurrency=bool(currency_prefs.get("MultiCurrencyEnabled", False)),
        company_name=str(info.get("CompanyName", ""))[:200],
        updated_at=timezone.now(),
    )
    return QboConnection.objects.select_related("school").get(pk=connection_id)


@dataclass(frozen=True)
class SetupChoices:
    items: list[tuple[str, str]]
    accounts: list[tuple[str, str]]


def qbo_setup_choices(*, school_id: int) -> SetupChoices:
    """The company's sales items and the accounts a payment can be deposited to."""
    session = QboSession(QboConnection.objects.select_related("school").get(school_id=school_id))
    items = session.query("SELECT * FROM Item MAXRESULTS 1000").get("Item", [])
    accounts = session.query(
        "SELECT * FROM Account WHERE AccountType IN ('Bank', 'Other Current Asset') MAXRESULTS 1000"
    ).get("Account", [])
    return SetupChoices(
        items=[
            (str(i["Id"]), str(i.get("Name", "")))
            for i in items
            if i.get("Type", "Service") in ("Service", "NonInventory", "Inventory")
        ],
        accounts=[(str(a["Id"]), f"{a.get('Name', '')} ({a.get('AccountType', '')})") for a in accounts],
    )


def qbo_connection_configure(*, school_id: int, item_id: str, deposit_account_id: str, actor: str) -> QboConnection:
    """Store the sales item and deposit account staff chose (checked against the company) and
    start syncing what waited for them."""
    choices = qbo_setup_choices(school_id=school_id)
    items, accounts = dict(choices.items), dict(choices.accounts)
    if item_id not in items or deposit_account_id not in accounts:
        raise QboFault("That item or account no longer exists in QuickBooks; choose again.")
    connection = QboConnection.objects.get(school_id=school_id)
    qbo_company_refresh(connection_id=connection.pk)
    with transaction.atomic():
        connection = locks.connection_of_school(school_id)
        connection.item_id, connection.item_name = item_id, items[item_id]
        connection.deposit_account_id, connection.deposit_account_name = (
            deposit_account_id,
            accounts[deposit_account_id],
        )
        connection.save(
            update_fields=["item_id", "item_name", "deposit_account_id", "deposit_account_name", "updated_at"]
        )
        audit_record(
            action="qbo.configured",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={
                "item_id": item_id,
                "deposit_account_id": deposit_account_id,
                "home_currency": connection.home_currency,
            },
        )
    qbo_school_resume(school_id=school_id)
    return connection


def qbo_connection_disconnect(*, school_id: int, actor: str) -> str:
    """Revoke the tokens at Intuit and forget them; the school's sync pauses. Returns a warning
    for staff if Intuit could not confirm the revocation."""
    connection = QboConnection.objects.select_related("school").get(school_id=school_id)
    warning = ""
    token = connection.refresh_token or connection.access_token
    if token:
        try:
            auth_client_build().revoke(token=token)
        except AuthClientError as exc:
            warning = (
                f"Intuit answered {oauth_error(exc)} to the revocation (the tokens were probably no longer valid)."
            )
        except (requests.RequestException, QboUnavailable, QboNotConfigured) as exc:
            warning = (
                f"Intuit could not be reached to revoke access ({type(exc).__name__}); to be sure, disconnect the app "
                "in QuickBooks (Settings > Apps)."
            )
    with transaction.atomic():
        connection = locks.connection(connection.pk)
        connection.access_token = connection.refresh_token = ""
        connection.access_token_expires_at = connection.refresh_token_expires_at = None
        connection.token_version += 1
        connection.status = QboConnection.Status.DISCONNECTED
        connection.status_reason = f"Disconnected by {actor}"
        connection.save()
        audit_record(
            action="qbo.disconnected",
            actor_type=AuditLog.ActorType.STAFF,
            actor=actor,
            school_id=school_id,
            target=connection,
            details={"realm_id": connection.realm_id, "warning": warning},
        )
        _school_pause(school_id=school_id, reason=_pause_reason(connection))
    return warning
