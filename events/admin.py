"""Staff admin of outbound webhooks: a school's endpoints (secret shown once, rotation,
re-enabling) and the delivery log (attempts and answers, replay). Scoped to the staff user's
schools like every school-owned admin."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from events import outbound
from events.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from payments.admin.scoping import SchoolScopedAdmin


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="Where the school's system receives events (https).")
    event_types_text = forms.CharField(
        label="Event types",
        required=False,
        help_text='Comma-separated, e.g. "payment.*, webhook.dead_lettered". Empty: every event of the school.',
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("school", "url", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["event_types_text"].initial = ", ".join(self.instance.event_types)

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            outbound.destination_check(url)
        except outbound.DestinationRefused as exc:
            raise forms.ValidationError(str(exc)) from exc
        return url

    def clean_event_types_text(self):
        types = [t.strip() for t in self.cleaned_data["event_types_text"].split(",") if t.strip()]
        for t in types:
            if not all(part.replace("_", "").isalnum() or part == "*" for part in t.split(".")):
                raise forms.ValidationError(f"Not an event type: {t!r}")
        return types


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(SchoolScopedAdmin):
    form = EndpointForm
    list_display = ("url", "school", "is_active", "failing_since", "disabled_at", "created_at")
    list_filter = ("school", "is_active")
    readonly_fields = ("is_active", "failing_since", "disabled_at", "disabled_reason", "previous_secret_expires_at", "created_at")
    actions = ["rotate_secret", "enable"]

    def save_model(self, request, obj, form, change):
        types = form.cleaned_data.get("event_types_text", [])
        if change:
            obj.event_types = types
            super().save_model(request, obj, form, change)
            return
        if not self.has_school_access(request, obj):
            raise PermissionDenied("not your school")
        endpoint, secret = outbound.endpoint_create(
            school=obj.school, url=obj.url, description=obj.description, event_types=types, actor=request.user
        )
        obj.pk, obj._state.adding, obj._state.db = endpoint.pk, False, endpoint._state.db
        request._endpoint_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        # The only page that ever shows the secret: the answer to the POST that made it.
        return self._secret_page(request, obj, request._endpoint_secret, created=True)

    def _secret_page(self, request, endpoint, secret, *, created):
        context = {
            **self.admin_site.each_context(request),
            "title": f"Signing secret of {endpoint.url}",
            "opts": self.model._meta,
            "endpoint": WebhookEndpoint.objects.get(pk=endpoint.pk),
            "secret": secret,
            "created": created,
        }
        return TemplateResponse(request, "admin/events/secret.html", context)

    @admin.action(description="Rotate the signing secret (one endpoint)", permissions=["change"])
    def rotate_secret(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rotate one endpoint at a time: its new secret is shown once.", messages.ERROR)
            return None
        endpoint = queryset.get()
        secret = outbound.endpoint_secret_rotate(endpoint_id=endpoint.pk, actor=request.user)
        return self._secret_page(request, endpoint, secret, created=False)

    @admin.action(description="Enable again (after fixing the receiving system)", permissions=["change"])
    def enable(self, request, queryset):
        for endpoint in queryset.filter(is_active=False):
            outbound.endpoint_enable(endpoint_id=endpoint.pk, actor=request.user)
        self.message_user(request, "Enabled. New events will be delivered; replay the cancelled ones from the delivery log.")


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("attempted_at", "replay", "status_code", "duration_ms", "error", "response_body")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(EndpointDelivery)
class EndpointDeliveryAdmin(SchoolScopedAdmin):
    school_path = "endpoint__school"
    list_display = ("event_type", "event_id", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at", "created_at")
    list_filter = ("status", "event_type")
    search_fields = ("=event_id",)
    readonly_fields = (
        "endpoint", "event_id", "event_type", "status", "attempts", "next_attempt_at", "last_status_code",
        "last_error", "delivered_at", "created_at", "body",
    )  # fmt: skip
    fields = readonly_fields
    inlines = [AttemptInline]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Send again now (replay)", permissions=["change"])
    def replay(self, request, queryset):
        outcomes = [outbound.delivery_replay(delivery_id=d.pk, actor=request.user) for d in queryset[:50]]
        delivered = outcomes.count("delivered")
        self.message_user(
            request, f"Sent {len(outcomes)}: {delivered} delivered, {len(outcomes) - delivered} failed (see the attempts).",
            messages.SUCCESS if delivered == len(outcomes) else messages.WARNING,
        )  # fmt: skip
