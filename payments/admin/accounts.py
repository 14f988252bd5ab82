"""Provider accounts: created with a generated secret shown once, rotated, switched to test mode,
restricted to an IP allowlist.

Secrets (webhook secret, previous secret, API key, credentials) are never rendered: they are not
fields of any form here, a new or rotated secret is shown once in the answer to the POST that
made it (never stored elsewhere, never in a message or the session), and that answer is not
cached (``admin_view`` adds never-cache headers). Writes go through ``payments.services``, which
audits them.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from payments import selectors, services
from payments.admin.display import ProviderNameFilter
from payments.admin.scoping import SchoolScopedAdmin
from payments.forms import AccountChangeForm, AccountCreateForm, AccountRotateForm
from payments.models import ProviderAccount
from providers.registry import get_provider

# Kept out of Django's error reports (a 500 page in DEBUG, the admins' e-mail) if a view fails:
# the typed secrets in the POST, and the locals holding them.
_hide_secrets = method_decorator(
    [
        sensitive_post_parameters("webhook_secret", "api_key", "credentials", "new_secret"),
        sensitive_variables("secret", "data"),
    ]
)


@admin.register(ProviderAccount)
class ProviderAccountAdmin(SchoolScopedAdmin):
    # No "updated" column: the paybill action's checkboxes take its room on a laptop (history has it).
    list_display = ("school", "provider_name", "test_mode", "active", "has_ip_allowlist")
    list_filter = (("provider", ProviderNameFilter), "test_mode", "active")
    actions = ["register_paybill"]
    form = AccountChangeForm
    fields = (
        "school",
        "provider",
        "webhook_url",
        "secret_status",
        "api_key_status",
        "test_mode",
        "active",
        "ip_allowlist",
        "created_at",
        "updated_at",
    )
    readonly_fields = (
        "school",
        "provider",
        "webhook_url",
        "secret_status",
        "api_key_status",
        "created_at",
        "updated_at",
    )

    # --- Change list and change page -------------------------------------------------------------

    @admin.action(description="Register paybill URLs with Daraja (M-Pesa)", permissions=["change"])
    def register_paybill(self, request: HttpRequest, queryset) -> None:
        """Register each selected M-Pesa account's paybill (C2B) URLs; other providers are skipped."""
        for account in queryset.select_related("school"):
            if account.provider != "mpesa":
                self.message_user(request, f"{account}: not an M-Pesa account, skipped.", messages.WARNING)
                continue
            try:
                summary = services.account_c2b_register(
                    account_id=account.pk, actor_type="staff", actor=request.user.get_username()
                )
            except services.PaybillError as exc:
                self.message_user(request, f"{account}: {exc}", messages.ERROR)
            else:
                self.message_user(request, summary, messages.SUCCESS)

    @admin.display(description="Provider", ordering="provider")
    def provider_name(self, obj: ProviderAccount) -> str:
        return selectors.provider_display_name(obj.provider)

    @admin.display(boolean=True, description="IP allowlist")
    def has_ip_allowlist(self, obj: ProviderAccount) -> bool:
        return bool(obj.ip_allowlist.strip())

    @admin.display(description="Webhook URL")
    def webhook_url(self, obj: ProviderAccount) -> str:
        return selectors.account_webhook_url(account=obj)

    @admin.display(description="Webhook secret")
    def secret_status(self, obj: ProviderAccount) -> str:
        if obj.previous_secret_expires_at and obj.previous_webhook_secret:
            return f"Set; the previous one also verifies until {obj.previous_secret_expires_at:%Y-%m-%d %H:%M %Z}."
        return "Set (never shown again; rotate it to get a new one)."

    @admin.display(description="Secret API key")
    def api_key_status(self, obj: ProviderAccount) -> str:
        if not obj.api_key:
            return "Not set"
        problem = selectors.account_api_key_problem(account=obj)
        return f"Set, but: {problem}" if problem else "Set"

    def has_delete_permission(self, request, obj=None):
        # An account is deactivated, not deleted: its payments and audit trail refer to it.
        return False

    def save_model(self, request, obj, form, change):
        if not change or not self.has_school_access(request, obj):
            raise PermissionDenied  # adding goes through add_view and account_create
        account, _ = services.account_update(
            account_id=obj.pk,
            actor=request.user.get_username(),
            **{name: form.cleaned_data[name] for name in form.changed_data},
        )
        problem = selectors.account_api_key_problem(account=account)
        if problem:
            self.message_user(
                request, f"{problem}: payments through it will be refused until that matches.", messages.WARNING
            )

    # --- Creating: the secret is shown once ---------------------------------------------------------

    @_hide_secrets
    def add_view(self, request: HttpRequest, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        schools = selectors.schools_for_user(user=request.user).order_by("code")
        form = AccountCreateForm(request.POST or None, schools=schools)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                account, secret = services.account_create(
                    school_code=data["school"].code,
                    provider=data["provider"],
                    webhook_secret=data["webhook_secret"] or None,
                    api_key=data["api_key"],
                    credentials=data["credentials"],
                    test_mode=data["test_mode"],
                    ip_allowlist=data["ip_allowlist"],
                    actor=request.user.get_username(),
                )
            except services.OnboardingError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, account, [{"added": {}}])
                # Only a secret we generated is shown: one the user typed (or an API key that
                # doubles as one) is never echoed.
                generated = not data["webhook_secret"] and secret != account.api_key
                return self._secret_page(request, account, secret if generated else "", created=True)
        context = {
            **self.admin_site.each_context(request),
            "title": "Connect a school to a provider",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/payments/provideraccount/add.html", context)

    # --- Rotating the webhook secret ------------------------------------------------------------------

    def get_urls(self):
        return [
            path(
                "<int:object_id>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name="payments_provideraccount_rotate",
            ),
        ] + super().get_urls()

    @_hide_secrets
    def rotate_view(self, request: HttpRequest, object_id: int):
        """A new webhook secret (``services.account_rotate_secret``); the old one keeps verifying
        for the grace period. Another school's account is "not found", like a missing one."""
        account = get_object_or_404(self.get_queryset(request).select_related("school"), pk=object_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        adapter = get_provider(account.provider)
        form = AccountRotateForm(
            request.POST or None, adapter=adapter, initial={"version": account.updated_at.isoformat()}
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                account, secret = services.account_rotate_secret(
                    school_code=account.school.code,
                    provider=account.provider,
                    new_secret=data["new_secret"] or None,
                    grace_hours=data["grace_hours"],
                    expected_updated_at=data["version"],
                    actor=request.user.get_username(),
                )
            except services.OnboardingError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_change(request, account, "Rotated the webhook secret.")
                return self._secret_page(request, account, "" if data["new_secret"] else secret, created=False)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the webhook secret of {account}",
            "opts": self.model._meta,
            "original": account,
            "account": account,
            "adapter": adapter,
            "form": form,
        }
        return TemplateResponse(request, "admin/payments/provideraccount/rotate.html", context)

    def _secret_page(self, request: HttpRequest, account: ProviderAccount, secret: str, *, created: bool):
        """The answer to the POST that created or rotated a secret: the only page that ever shows
        it. A reload re-submits the POST, which the service refuses (the account exists; the
        rotation form's version is stale), so the secret is not shown twice."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"{'Connected' if created else 'New webhook secret for'} {account}",
            "opts": self.model._meta,
            "original": account,
            "account": account,
            "secret": secret,
            "created": created,
            "webhook_url": selectors.account_webhook_url(account=account),
            "provider_name": selectors.provider_display_name(account.provider),
            "api_key_problem": selectors.account_api_key_problem(account=account),
            "signs_with_api_key": get_provider(account.provider).signs_with_api_key,
        }
        return TemplateResponse(request, "admin/payments/provideraccount/secret.html", context)
