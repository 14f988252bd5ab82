"""API tokens in admin (superusers: the staff group has no permission on them). A token is made
here and shown once, on the page that answers "Save"; afterwards only its first characters and
its digest exist (django-rest-knox)."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from knox import admin as knox_admin  # noqa: F401 - registers knox's admin first, so it can be replaced
from knox.models import AuthToken

from payments.api_tokens import api_token_create

admin.site.unregister(AuthToken)  # knox's own admin shows new tokens in a message (a cookie)


class ApiTokenForm(forms.Form):
    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True, is_staff=True))
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Blank: the token does not expire; revoke it by deleting it."
    )


@admin.register(AuthToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("token_key", "user", "created", "expiry")
    search_fields = ("token_key", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("token_key", "user", "created", "expiry")
    fields = readonly_fields

    def has_change_permission(self, request, obj=None):
        return False

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            return super().add_view(request, form_url, extra_context)
        form = ApiTokenForm(request.POST or None)
        token = None
        if request.method == "POST" and form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            token = api_token_create(
                user=form.cleaned_data["user"],
                expires_in=timedelta(days=days) if days else None,
                actor=request.user.get_username(),
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "API token created" if token else "Add API token",
            "opts": self.model._meta,
            "form": form,
            "token": token,
            "token_user": form.cleaned_data["user"] if token else None,
        }
        response = TemplateResponse(request, "admin/knox/authtoken/add.html", context)
        # The token is on this page only: never stored by a browser or proxy cache.
        response["Cache-Control"] = "no-store"
        return response
