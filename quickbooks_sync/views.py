"""Staff pages of the QuickBooks connection: connect (the intuit-oauth authorization flow, its
``state`` checked against the session), choose the item and deposit account, disconnect, sync
now. Thin: each view checks the user, then calls one service."""

from __future__ import annotations

import hmac
import logging
import secrets

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from payments.models import School
from payments.selectors import schools_for_user
from quickbooks_sync import services
from quickbooks_sync.errors import QboError
from quickbooks_sync.models import QboConnection

logger = logging.getLogger(__name__)

SESSION_KEY = "qbo_oauth"


def _overview_url() -> str:
    return reverse("admin:quickbooks_sync_qboconnection_changelist")


def _school_for_change(request: HttpRequest, school_code: str) -> School:
    if not request.user.has_perm("quickbooks_sync.change_qboconnection"):
        raise PermissionDenied
    # Staff connect, configure and disconnect their own schools only.
    return get_object_or_404(schools_for_user(user=request.user), code=school_code)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


@staff_member_required
@require_POST
def connect(request: HttpRequest, school_code: str) -> HttpResponse:
    """ "Connect to QuickBooks": remember a random state in the session, go to Intuit."""
    school = _school_for_change(request, school_code)
    state = secrets.token_urlsafe(32)
    try:
        url = services.qbo_authorization_url(state=state)
    except QboError as exc:
        messages.error(request, f"Cannot connect to QuickBooks: {exc}")
        return redirect(_overview_url())
    request.session[SESSION_KEY] = {"state": state, "school_id": school.pk}
    return redirect(url)


@staff_member_required
@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    """Intuit sends staff back here with ``code``, ``state`` and ``realmId`` (docs/reference/quickbooks.md §1.3)."""
    pending = request.session.pop(SESSION_KEY, None)
    state = request.GET.get("state", "")
    if not pending or not state or not hmac.compare_digest(state, pending.get("state", "")):
        logger.warning("QuickBooks callback with an unknown state refused (user %s)", _actor(request))
        return render(
            request,
            "quickbooks_sync/callback_error.html",
            {**admin.site.each_context(request), "title": "QuickBooks connection refused"},
            status=400,
        )
    school = get_object_or_404(School, pk=pending["school_id"])
    if request.GET.get("error"):
        messages.warning(request, f"QuickBooks access was not granted for {school.name} ({request.GET['error']}).")
        return redirect(_overview_url())
    code, realm_id = request.GET.get("code", ""), request.GET.get("realmId", "")
    if not code or not realm_id:
        messages.error(request, "QuickBooks did not send an authorization code; please connect again.")
        return redirect(_overview_url())
    try:
        connection = services.qbo_connection_authorize(
            school_id=school.pk, code=code, realm_id=realm_id, actor=_actor(request)
        )
    except QboError as exc:
        messages.error(request, f"Could not connect {school.name} to QuickBooks: {exc}")
        return redirect(_overview_url())
    messages.success(
        request, f"{school.name} is connected to QuickBooks company {connection.company_name or realm_id}."
    )
    if not connection.is_configured:
        return redirect("qbo:setup", school_code=school.code)
    return redirect(_overview_url())


class SetupForm(forms.Form):
    item_id = forms.ChoiceField(label="Sales item for sales and refund receipts")
    deposit_account_id = forms.ChoiceField(label="Deposit account")

    def __init__(self, *args, choices: services.SetupChoices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["item_id"].choices = choices.items
        self.fields["deposit_account_id"].choices = choices.accounts


@staff_member_required
@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest, school_code: str) -> HttpResponse:
    """Choose the sales item and the deposit account, listed from the company itself."""
    school = _school_for_change(request, school_code)
    connection = get_object_or_404(QboConnection, school=school, status=QboConnection.Status.CONNECTED)
    try:
        choices = services.qbo_setup_choices(school_id=school.pk)
    except QboError as exc:
        messages.error(request, f"Could not read the items and accounts from QuickBooks: {exc}")
        return redirect(_overview_url())
    initial = {"item_id": connection.item_id, "deposit_account_id": connection.deposit_account_id}
    form = SetupForm(request.POST or None, initial=initial, choices=choices)
    if request.method == "POST" and form.is_valid():
        try:
            services.qbo_connection_configure(
                school_id=school.pk,
                item_id=form.cleaned_data["item_id"],
                deposit_account_id=form.cleaned_data["deposit_account_id"],
                actor=_actor(request),
            )
        except QboError as exc:
            messages.error(request, f"Could not save the QuickBooks settings: {exc}")
        else:
            messages.success(request, f"QuickBooks settings of {school.name} saved; payments now sync.")
            return redirect(_overview_url())
    return render(
        request,
        "quickbooks_sync/setup.html",
        {
            **admin.site.each_context(request),
            "title": f"QuickBooks settings: {school.name}",
            "form": form,
            "school": school,
            "connection": connection,
        },  # fmt: skip
    )


@staff_member_required
@require_POST
def disconnect(request: HttpRequest, school_code: str) -> HttpResponse:
    school = _school_for_change(request, school_code)
    get_object_or_404(QboConnection, school=school)
    warning = services.qbo_connection_disconnect(school_id=school.pk, actor=_actor(request))
    messages.success(
        request, f"{school.name} is disconnected from QuickBooks; its payments wait until it is connected again."
    )
    if warning:
        messages.warning(request, warning)
    return redirect(_overview_url())


@staff_member_required
@require_POST
def sync_now(request: HttpRequest, school_code: str) -> HttpResponse:
    school = _school_for_change(request, school_code)
    get_object_or_404(QboConnection, school=school)
    services.qbo_school_resume(school_id=school.pk)
    messages.success(request, f"QuickBooks sync of {school.name} started.")
    return redirect(_overview_url())
