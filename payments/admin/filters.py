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


class RiskFilter(admin.SimpleListFilter):
    """Payments flagged by risk scoring (payments.risk): all flagged, those held from the books,
    those a staff member cleared."""

    title = "risk"
    parameter_name = "risk"

    def lookups(self, request, model_admin):
        return [("high", "High risk"), ("held", "Held from the books"), ("cleared", "Cleared by staff")]

    def queryset(self, request, queryset):
        if self.value() == "high":
            return queryset.filter(risk_flagged=True)
        if self.value() == "held":
            return queryset.filter(risk_held=True)
        if self.value() == "cleared":
            return queryset.filter(risk_flagged=True, risk_cleared_at__isnull=False)
        return queryset
