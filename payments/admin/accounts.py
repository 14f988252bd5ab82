"""Provider accounts: created with a generated secret shown once, rotated, switched to test mode."""

from __future__ import annotations

from django.contrib import admin

from payments.admin.scoping import SchoolScopedAdmin
from payments.models import AggregatorAccount


@admin.register(AggregatorAccount)
class AggregatorAccountAdmin(SchoolScopedAdmin):
    list_display = ("school", "provider", "test_mode", "active", "updated_at")
    list_filter = ("provider", "test_mode", "active")
    fields = ("school", "provider", "test_mode", "active", "ip_allowlist", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")
