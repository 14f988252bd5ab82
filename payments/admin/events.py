"""Webhook events: the raw body, the verification and processing result, replay."""

from __future__ import annotations

from django.contrib import admin

from payments.admin.scoping import SchoolScopedAdmin
from payments.models import WebhookEvent


@admin.register(WebhookEvent)
class WebhookEventAdmin(SchoolScopedAdmin):
    school_path = "account__school"
    list_display = ("received_at", "provider", "external_event_id", "event_type", "status", "attempts")
    list_filter = ("status", "account__provider")
    search_fields = ("external_event_id",)
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
