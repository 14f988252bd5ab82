"""List filters of the payment admin that are not a plain field."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.filters import DateFieldListFilter


class StatusChangedFilter(DateFieldListFilter):
    """By the day of the payment's last status change: "succeeded today" is money in today."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = "status changed"


class LedgerConflictFilter(admin.SimpleListFilter):
    """Payments whose reports cannot all be true (payments.ledger): staff check them with the provider."""

    title = "reports that disagree"
    parameter_name = "conflict"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(ledger_conflict="")
        if self.value() == "no":
            return queryset.filter(ledger_conflict="")
        return queryset


class WaitingFilter(admin.SimpleListFilter):
    """Facts that arrived before their payment and wait for it."""

    title = "waiting for its payment"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(payment__isnull=True)
        if self.value() == "no":
            return queryset.filter(payment__isnull=False)
        return queryset
